"""Federated Averaging, the example-weighted mean of node models."""

from __future__ import annotations

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import weighted_average, weighted_metrics
from aggregation.fl.strategy import FitRes, Strategy


class FedAvg(Strategy):
    """Federated Averaging.

    McMahan, Moore, Ramage, Hampson and Agüera y Arcas, "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", AISTATS 2017 (arXiv:1602.05629).

    min_results: fewer results than this keep the current model.
    """

    name = "fedavg"

    def __init__(self, *, min_results: int = 1) -> None:
        if (
            isinstance(min_results, bool)
            or not isinstance(min_results, int)
            or min_results < 1
        ):
            raise ValueError(
                f"min_results must be a positive integer, got {min_results!r}"
            )
        self.min_results = min_results

    def __repr__(self) -> str:
        return f"FedAvg(min_results={self.min_results})"

    def aggregate_fit(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        if not results or len(results) < self.min_results:
            return None, {}
        new = weighted_average([(r.parameters, r.num_examples) for r in results])
        metrics = weighted_metrics([(r.num_examples, r.metrics) for r in results])
        metrics["num_examples"] = sum(r.num_examples for r in results)
        metrics["num_results"] = len(results)
        return new, metrics
