"""Bulyan: Krum picks a trusted subset, then a coordinate-wise trimmed mean around its median."""

from __future__ import annotations

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import fit_metrics, flat_stack, unflatten_like
from aggregation.fl.checks import check_int
from aggregation.fl.robust import bulyan_select, mean_around_median, pairwise_sq_distances
from aggregation.fl.strategy import AggregationError, FitRes, Strategy


class Bulyan(Strategy):
    """Bulyan.

    El Mhamdi, Guerraoui and Rouault, "The Hidden Vulnerability of Distributed Learning in
    Byzantium", ICML 2018 (arXiv:1802.07927).

    With n results and at most f = num_malicious Byzantine: Krum is applied θ = n − 2f times, each
    time moving its choice from the remaining results to the selection; then every coordinate is
    the mean of the β = θ − 2f selected values closest to their median. The paper needs
    n ≥ 4f + 3 and fewer results are refused with an AggregationError.
    """

    name = "bulyan"

    def __init__(self, *, min_results: int = 1, num_malicious: int = 0) -> None:
        self.min_results = check_int("min_results", min_results, minimum=1)
        self.num_malicious = check_int("num_malicious", num_malicious, minimum=0)

    def __repr__(self) -> str:
        return f"Bulyan(min_results={self.min_results}, num_malicious={self.num_malicious})"

    def combine(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        n, f = len(results), self.num_malicious
        if n < 4 * f + 3:
            raise AggregationError(
                f"bulyan with num_malicious={f} needs at least {4 * f + 3} results (4f + 3), got {n}"
            )
        theta = n - 2 * f
        flat = flat_stack(results)
        chosen = bulyan_select(pairwise_sq_distances(flat), f, theta)
        new = unflatten_like(mean_around_median(flat[chosen], theta - 2 * f), parameters)
        metrics = fit_metrics(results)
        metrics["num_selected"] = len(chosen)
        return new, metrics
