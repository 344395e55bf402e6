"""Krum: the node model closest to its nearest neighbours becomes the new model."""

from __future__ import annotations

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import fit_metrics, flat_stack, unflatten_like
from aggregation.fl.checks import check_int
from aggregation.fl.robust import krum_select, pairwise_sq_distances
from aggregation.fl.strategy import AggregationError, FitRes, Strategy


class Krum(Strategy):
    """Krum.

    Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017.

    With n results of which at most f = num_malicious are Byzantine, each result is scored by the
    sum of squared distances to its n − f − 2 nearest other results; the lowest score wins. The
    paper's guarantee needs n ≥ 2f + 3, so fewer results are refused with an AggregationError.
    """

    name = "krum"

    def __init__(self, *, min_results: int = 1, num_malicious: int = 0) -> None:
        self.min_results = check_int("min_results", min_results, minimum=1)
        self.num_malicious = check_int("num_malicious", num_malicious, minimum=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_results={self.min_results}, num_malicious={self.num_malicious})"

    def keep(self, n: int) -> int:
        """How many of the best-scored results are averaged; Krum keeps one."""
        return 1

    def combine(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        n, f = len(results), self.num_malicious
        if n < 2 * f + 3:
            raise AggregationError(
                f"{self.name} with num_malicious={f} needs at least {2 * f + 3} results (2f + 3), got {n}"
            )
        flat = flat_stack(results)
        chosen = krum_select(pairwise_sq_distances(flat), f, self.keep(n))
        new = unflatten_like(flat[chosen].mean(axis=0), parameters)
        metrics = fit_metrics(results)
        metrics["num_selected"] = len(chosen)
        return new, metrics
