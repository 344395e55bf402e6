"""Federated feature statistics: each node's per-feature count, sum and sum of squares, combined by the server
into one scaling that every node and the server's evaluation apply. No row leaves a node, only these sums.

Federated analytics in the sense of Flower's and TensorFlow Federated's "federated statistics": the
pooled mean and variance are exact functions of the sums, so the global scaling equals the one a
central server would fit on the pooled training rows (up to the optional DP noise below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aggregation.fl.dp import add_noise

SCALINGS = ("global", "node", "range")
STD_FLOOR = 1e-6
# Fixed input ranges known for bundled data sets (digits are 4x4-block counts, 0-16); a CSV file has none.
FIXED_RANGES: dict[str, tuple[float, float]] = {"digits": (0.0, 16.0)}


@dataclass(frozen=True)
class FeatureStats:
    """One party's sums over its training rows: count, per-feature sum and per-feature sum of squares."""

    count: int
    sum: np.ndarray
    sum_sq: np.ndarray

    def to_dict(self) -> dict[str, object]:
        return {"count": self.count, "sum": self.sum.tolist(), "sum_sq": self.sum_sq.tolist()}


@dataclass(frozen=True)
class Scaling:
    """x ↦ (x − shift) / scale, per feature; the same arrays on every node and on the server."""

    shift: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1:] != self.shift.shape:
            raise ValueError(f"the scaling is for {self.shift.size} features, the data has {x.shape[1]}")
        return ((np.asarray(x, dtype=np.float64) - self.shift) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {"shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Scaling:
        shift, scale = np.asarray(data["shift"], dtype=np.float64), np.asarray(data["scale"], dtype=np.float64)
        if shift.ndim != 1 or shift.shape != scale.shape or not (np.isfinite(shift).all() and (scale > 0).all()):
            raise ValueError("a scaling needs finite shifts and positive scales, one of each per feature")
        return cls(shift, scale)


def feature_stats(x: np.ndarray, *, noise_multiplier: float = 0.0, clip: float | None = None,
                  rng: np.random.Generator | None = None) -> FeatureStats:
    """The sums of `x`'s rows; with noise_multiplier z > 0, local differential privacy by the Gaussian mechanism.

    Every value is first clipped to [−clip, clip], so one row changes the sum vector by at most clip·√d and
    the sum-of-squares vector by at most clip²·√d (L2); each gets N(0, (z·sensitivity)²) noise per feature
    (aggregation.fl.dp.add_noise, as central DP does). The count is released exactly.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"feature statistics need a non-empty (rows, features) table, got shape {x.shape}")
    if noise_multiplier < 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a finite number of at least 0, got {noise_multiplier}")
    if noise_multiplier > 0:
        if clip is None or not clip > 0 or not math.isfinite(clip):
            raise ValueError("noisy feature statistics need a positive clip bound on every value")
        x = np.clip(x, -clip, clip)
    total, total_sq = x.sum(axis=0), (x * x).sum(axis=0)
    if noise_multiplier > 0:
        assert clip is not None
        rng = rng if rng is not None else np.random.default_rng()
        root_d = math.sqrt(x.shape[1])
        total = add_noise([total], noise_multiplier * clip * root_d, rng)[0].astype(np.float64)
        total_sq = add_noise([total_sq], noise_multiplier * clip * clip * root_d, rng)[0].astype(np.float64)
    return FeatureStats(int(x.shape[0]), total, total_sq)


def feature_stats_check(stats: FeatureStats, features: int | None = None) -> None:
    """Refuse, with a sentence, sums that no table could have produced (or of the wrong width)."""
    if isinstance(stats.count, bool) or not isinstance(stats.count, int) or stats.count < 1:
        raise ValueError(f"count must be a whole number of rows, at least 1, got {stats.count!r}")
    for name, arr in (("sum", stats.sum), ("sum_sq", stats.sum_sq)):
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name} must be a non-empty list of numbers, one per feature")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
    if stats.sum.shape != stats.sum_sq.shape:
        raise ValueError(f"sum has {stats.sum.size} features but sum_sq has {stats.sum_sq.size}")
    if features is not None and stats.sum.size != features:
        raise ValueError(f"the statistics cover {stats.sum.size} features, the experiment's model takes {features}")
    if (stats.sum_sq < 0).any():
        raise ValueError("sum_sq cannot be negative: it is a sum of squares")


def feature_stats_combine(parts: list[FeatureStats]) -> Scaling:
    """The pooled mean and standard deviation of all parties' rows: shift = mean, scale = std.

    Variance = E[x²] − E[x]², clamped at 0 (noise or rounding can push it below); a constant feature is
    only centred (scale 1), never divided by 0.
    """
    if not parts:
        raise ValueError("no feature statistics to combine")
    count = sum(p.count for p in parts)
    total = np.sum([p.sum for p in parts], axis=0)
    total_sq = np.sum([p.sum_sq for p in parts], axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return Scaling(mean, np.where(std < STD_FLOOR, 1.0, std))


def scaling_standardize(x: np.ndarray) -> Scaling:
    """A party's own mean and standard deviation (the per-node option)."""
    return feature_stats_combine([feature_stats(x)])


def scaling_fixed_range(source: str, features: int) -> Scaling:
    """(x − low) / (high − low) for a data set whose input range is known; ValueError for any other."""
    if source not in FIXED_RANGES:
        raise ValueError(f"{source} has no known fixed input range (only {', '.join(FIXED_RANGES)} does); "
                         "use the global or node feature scaling")
    low, high = FIXED_RANGES[source]
    return Scaling(np.full(features, low), np.full(features, high - low))
