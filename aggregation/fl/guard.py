"""Defaults that need no tuning against one bad node: outlying updates and inflated example counts.

Both compare a node with the round's median, so they act only where a majority exists (three or more
updates) and adapt to any model's scale: no norm bound to guess per model.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

MIN_UPDATES = 3


def outlier_reasons(norms: Sequence[float | None], factor: float) -> dict[int, str]:
    """{index: reason} for each update farther from the model than `factor` × the round's median distance.

    `norms` are the updates' L2 distances from the round's model (None: unknown, never judged). With
    fewer than three known distances, or `factor` 0, nothing is judged.
    """
    known = [n for n in norms if n is not None and math.isfinite(n)]
    if factor <= 0 or len(known) < MIN_UPDATES:
        return {}
    median = statistics.median(known)
    bound = factor * median
    return {
        i: (f"its distance from the model ({n:.6g}) is more than {factor:g}x the round's median distance "
            f"({median:.6g})")
        for i, n in enumerate(norms)
        if n is not None and (not math.isfinite(n) or (median > 0 and n > bound))
    }


def capped_examples(counts: Sequence[int], factor: float) -> list[int]:
    """Each node's weight, at most `factor` × the round's median num_examples (unchanged below three or factor 0).

    A node that claims 2³¹−1 examples would otherwise carry the whole mean by itself.
    """
    if factor <= 0 or len(counts) < MIN_UPDATES:
        return list(counts)
    cap = max(1, int(factor * statistics.median(counts)))
    return [min(c, cap) for c in counts]
