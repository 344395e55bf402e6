"""FedTrimmedAvg: the coordinate-wise mean after cutting a fraction of the values at each end."""

from __future__ import annotations

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import fit_metrics, layer_stack
from aggregation.fl.checks import check_int, check_number
from aggregation.fl.robust import trimmed_mean
from aggregation.fl.strategy import FitRes, Strategy


class FedTrimmedAvg(Strategy):
    """Coordinate-wise trimmed mean.

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018 (arXiv:1803.01498).

    For each coordinate the floor(beta·K) smallest and as many largest of the K values are
    dropped and the rest averaged (unweighted). beta is in [0, 0.5); beta 0 is the plain mean.
    """

    name = "fedtrimmedavg"

    def __init__(self, *, min_results: int = 1, beta: float = 0.2) -> None:
        self.min_results = check_int("min_results", min_results, minimum=1)
        self.beta = check_number("beta", beta, 0, 0.5, high_open=True)

    def __repr__(self) -> str:
        return f"FedTrimmedAvg(min_results={self.min_results}, beta={self.beta})"

    def combine(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        cut = int(self.beta * len(results))
        new = [trimmed_mean(layer_stack(results, i), cut).astype(np.float32) for i in range(len(parameters))]
        metrics = fit_metrics(results)
        metrics["num_trimmed"] = 2 * cut
        return new, metrics
