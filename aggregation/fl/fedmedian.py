"""FedMedian: the coordinate-wise median of the node models."""

from __future__ import annotations

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import fit_metrics, layer_stack
from aggregation.fl.checks import check_int
from aggregation.fl.robust import coordinate_median
from aggregation.fl.strategy import FitRes, Strategy


class FedMedian(Strategy):
    """Coordinate-wise median.

    Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018 (arXiv:1803.01498).

    Every coordinate of the new model is the median of that coordinate over the results, so fewer
    than half of the nodes cannot drag it outside the range of the honest values. Unweighted: a
    node cannot gain influence by claiming more examples.
    """

    name = "fedmedian"

    def __init__(self, *, min_results: int = 1) -> None:
        self.min_results = check_int("min_results", min_results, minimum=1)

    def __repr__(self) -> str:
        return f"FedMedian(min_results={self.min_results})"

    def combine(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        # One layer at a time keeps the peak memory at K copies of a layer, not of the model.
        new = [coordinate_median(layer_stack(results, i)).astype(np.float32) for i in range(len(parameters))]
        return new, fit_metrics(results)
