"""FedProx: FedAvg on the server, plus a proximal term in every node's loss."""

from __future__ import annotations

from typing import Any

from aggregation.fl.checks import check_number
from aggregation.fl.fedavg import FedAvg


class FedProx(FedAvg):
    """FedProx.

    Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in Heterogeneous
    Networks", MLSys 2020 (arXiv:1812.06127).

    The server aggregates as FedAvg does and sends `proximal_mu` with every round; nodes add
    (mu/2)·||w − w_global||² to their loss (model.train's proximal_mu and global_params), which keeps
    local models from drifting far from the global one on heterogeneous data. mu 0 is FedAvg.
    """

    name = "fedprox"

    def __init__(self, *, min_results: int = 1, proximal_mu: float = 0.01) -> None:
        super().__init__(min_results=min_results)
        self.proximal_mu = check_number("proximal_mu", proximal_mu, 0)

    def __repr__(self) -> str:
        return f"FedProx(min_results={self.min_results}, proximal_mu={self.proximal_mu})"

    def configure_fit(self, server_round: int) -> dict[str, Any]:
        return {"proximal_mu": self.proximal_mu}
