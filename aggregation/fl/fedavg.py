"""Federated Averaging, the example-weighted mean of node models."""

from __future__ import annotations

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import check_results, fit_metrics, weighted_average
from aggregation.fl.checks import check_int
from aggregation.fl.strategy import FitRes, Strategy


class FedAvg(Strategy):
    """Federated Averaging.

    McMahan, Moore, Ramage, Hampson and Agüera y Arcas, "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", AISTATS 2017 (arXiv:1602.05629).

    min_results: fewer results than this keep the current model.
    """

    name = "fedavg"

    def __init__(self, *, min_results: int = 1) -> None:
        self.min_results = check_int("min_results", min_results, minimum=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_results={self.min_results})"

    def average(self, parameters: NDArrays, results: list[FitRes]) -> NDArrays:
        """The example-weighted mean of the results, checked against the current model's shapes."""
        check_results(results, parameters)
        return weighted_average([(r.parameters, r.num_examples) for r in results])

    def aggregate_fit(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        if not results or len(results) < self.min_results:
            return None, {}
        return self.average(parameters, results), fit_metrics(results)
