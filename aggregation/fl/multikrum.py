"""Multi-Krum: the mean of the node models with the best Krum scores."""

from __future__ import annotations

from aggregation.fl.checks import check_int
from aggregation.fl.krum import Krum
from aggregation.fl.strategy import AggregationError


class MultiKrum(Krum):
    """Multi-Krum.

    Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", NeurIPS 2017, section 5.

    Scores every result as Krum does (sum of squared distances to its n − f − 2 nearest others)
    and averages, unweighted, the num_to_keep best; num_to_keep None keeps n − f. Needs n ≥ 2f + 3
    and num_to_keep ≤ n − f, otherwise it refuses with an AggregationError.
    """

    name = "multikrum"

    def __init__(self, *, min_results: int = 1, num_malicious: int = 0, num_to_keep: int | None = None) -> None:
        super().__init__(min_results=min_results, num_malicious=num_malicious)
        self.num_to_keep = None if num_to_keep is None else check_int("num_to_keep", num_to_keep, minimum=1)

    def __repr__(self) -> str:
        return (
            f"MultiKrum(min_results={self.min_results}, num_malicious={self.num_malicious}, "
            f"num_to_keep={self.num_to_keep})"
        )

    def keep(self, n: int) -> int:
        honest = n - self.num_malicious
        if self.num_to_keep is None:
            return honest
        if self.num_to_keep > honest:
            raise AggregationError(
                f"multikrum cannot keep {self.num_to_keep} of {n} results when {self.num_malicious} may be "
                f"malicious; at most {honest} can be kept"
            )
        return self.num_to_keep
