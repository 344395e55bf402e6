"""FedAdagrad: the server applies the averaged update with Adagrad's accumulated second moment."""

from __future__ import annotations

import numpy as np

from aggregation.fl.fedopt import FedOpt


class FedAdagrad(FedOpt):
    """FedAdagrad.

    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and McMahan, "Adaptive Federated
    Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2: v ← v + Δ².

    Hyperparameters: eta (server learning rate), eta_l (node learning rate sent with each round,
    optional), beta_1 (momentum of m, 0 = plain Adagrad), tau (adaptivity; keeps the step finite).
    """

    name = "fedadagrad"

    def __init__(
        self,
        *,
        min_results: int = 1,
        eta: float = 0.01,
        eta_l: float | None = None,
        beta_1: float = 0.0,
        tau: float = 1e-3,
    ) -> None:
        super().__init__(min_results=min_results, eta=eta, eta_l=eta_l, beta_1=beta_1, tau=tau)

    def __repr__(self) -> str:
        return (
            f"FedAdagrad(min_results={self.min_results}, eta={self.eta}, eta_l={self.eta_l}, "
            f"beta_1={self.beta_1}, tau={self.tau})"
        )

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        v += delta * delta
