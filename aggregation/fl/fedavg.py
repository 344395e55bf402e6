"""Federated Averaging, the example-weighted mean of node models."""

from __future__ import annotations

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import fit_metrics, weighted_average
from aggregation.fl.checks import check_int
from aggregation.fl.strategy import FitRes, Strategy


class FedAvg(Strategy):
    """Federated Averaging.

    McMahan, Moore, Ramage, Hampson and Agüera y Arcas, "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", AISTATS 2017 (arXiv:1602.05629).

    min_results: fewer results than this keep the current model.

    The FedAvg family (FedAvgM, FedProx, FedAdagrad, FedAdam, FedYogi) uses the results' parameters
    only through their example-weighted mean, so `streams_mean` is True: the server may compute the
    mean while reading updates one at a time (memory independent of the number of nodes) and call
    `aggregate_mean` with it; `aggregate_fit` is the in-memory route to the same step.
    """

    name = "fedavg"
    streams_mean = True

    def __init__(self, *, min_results: int = 1) -> None:
        self.min_results = check_int("min_results", min_results, minimum=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_results={self.min_results})"

    def combine(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        mean = weighted_average([(r.parameters, r.num_examples) for r in results])
        return self.step_from_mean(server_round, parameters, mean, results)

    def aggregate_mean(
        self,
        server_round: int,
        parameters: NDArrays,
        mean: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        """aggregate_fit given the weighted mean; `results` give counts and metrics (parameters may be empty)."""
        if not results or len(results) < self.min_results:
            return None, {}
        return self.step_from_mean(server_round, parameters, mean, results)

    def step_from_mean(
        self, server_round: int, parameters: NDArrays, mean: NDArrays, results: list[FitRes]
    ) -> tuple[NDArrays | None, dict[str, float]]:
        """The next model from the current one and the results' mean; FedAvg takes the mean itself."""
        return mean, fit_metrics(results)
