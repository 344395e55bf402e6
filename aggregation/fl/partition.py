"""Splitting one data set into disjoint, seeded partitions, one per node: IID, Dirichlet label skew, shards."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_PARTITIONS = 100_000
DIRICHLET_ATTEMPTS = 20


@dataclass(frozen=True)
class Partitioning:
    """How to split: `kind` is iid, dirichlet (with `alpha`) or shards (with `shards` per partition)."""

    kind: str = "iid"
    alpha: float = 0.0
    shards: int = 0

    def __str__(self) -> str:
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        if self.kind == "shards":
            return f"shards:{self.shards}"
        return self.kind


def partitioning_parse(text: str) -> Partitioning:
    """Parse `iid`, `dirichlet:ALPHA` or `shards:K`; ValueError with a sentence on anything else."""
    kind, _, arg = str(text).strip().lower().partition(":")
    if kind == "iid" and not arg:
        return Partitioning("iid")
    if kind == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            alpha = math.nan
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"dirichlet needs a positive concentration, e.g. dirichlet:0.5, got {text!r}")
        return Partitioning("dirichlet", alpha=alpha)
    if kind == "shards":
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"shards needs a whole number of shards per partition, e.g. shards:2, got {text!r}")
        return Partitioning("shards", shards=int(arg))
    raise ValueError(f"unknown partitioning {text!r}; use iid, dirichlet:ALPHA or shards:K")


def _check(n: int, num_partitions: int) -> None:
    if not isinstance(num_partitions, int) or not 1 <= num_partitions <= MAX_PARTITIONS:
        raise ValueError(f"the number of partitions must be between 1 and {MAX_PARTITIONS}, got {num_partitions!r}")
    if n < num_partitions:
        raise ValueError(f"{n} samples cannot fill {num_partitions} partitions; use fewer partitions")


def partition_iid(n: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """A random permutation cut into near-equal parts (sizes differ by at most one)."""
    _check(n, num_partitions)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def partition_dirichlet(labels: np.ndarray, num_partitions: int, alpha: float, seed: int,
                        min_size: int = 2) -> list[np.ndarray]:
    """Label skew: each class is spread over the partitions in proportions drawn from Dirichlet(alpha).

    Small alpha gives each partition few classes; large alpha approaches IID (Hsu, Qi and Brown 2019,
    arXiv:1909.06335). Every partition gets at least `min_size` samples (so every node can keep a
    validation row): draws are repeated a few times, and if none qualifies the best one is topped up
    with random samples taken from the largest partitions.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    _check(n, num_partitions)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    min_size = min(min_size, n // num_partitions)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    best: list[np.ndarray] = []
    for _ in range(DIRICHLET_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for cls in classes:
            members = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * members.size).astype(int)
            for part, chunk in zip(parts, np.split(members, cuts)):
                part.append(chunk)
        result = [np.concatenate(p) for p in parts]
        if not best or min(r.size for r in result) > min(b.size for b in best):
            best = result
        if min(r.size for r in best) >= min_size:
            break
    return [np.sort(p) for p in _topped_up(best, min_size, rng)]


def _topped_up(parts: list[np.ndarray], min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Move random samples from the largest partition to the smallest until every one holds `min_size`."""
    parts = [rng.permutation(p) for p in parts]
    sizes = [p.size for p in parts]
    while min(sizes) < min_size:
        small, large = int(np.argmin(sizes)), int(np.argmax(sizes))
        parts[small] = np.append(parts[small], parts[large][-1])
        parts[large] = parts[large][:-1]
        sizes[small] += 1
        sizes[large] -= 1
    return parts


def partition_shards(labels: np.ndarray, num_partitions: int, shards_per_partition: int,
                     seed: int) -> list[np.ndarray]:
    """Pathological non-IID (McMahan et al. 2017): sort by label, cut into num_partitions·k shards, deal k each."""
    labels = np.asarray(labels)
    n = int(labels.shape[0])
    _check(n, num_partitions)
    total = num_partitions * shards_per_partition
    if total > n:
        raise ValueError(f"{num_partitions} partitions of {shards_per_partition} shards need at least {total} "
                         f"samples, there are {n}")
    rng = np.random.default_rng(seed)
    # A random tie-break inside each label, so which samples of a class share a shard depends on the seed.
    order = np.lexsort((rng.random(n), labels))
    shards = np.array_split(order, total)
    dealt = rng.permutation(total).reshape(num_partitions, shards_per_partition)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in dealt]


def partition_indices(partitioning: Partitioning | str, labels: np.ndarray, num_partitions: int,
                      seed: int) -> list[np.ndarray]:
    """Indices of every partition (disjoint, together all samples), by the given scheme and seed."""
    if isinstance(partitioning, str):
        partitioning = partitioning_parse(partitioning)
    if partitioning.kind == "dirichlet":
        return partition_dirichlet(labels, num_partitions, partitioning.alpha, seed)
    if partitioning.kind == "shards":
        return partition_shards(labels, num_partitions, partitioning.shards, seed)
    return partition_iid(len(labels), num_partitions, seed)


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each partition's label distribution and the whole set's.

    0 means every partition has the global class mix; values near 1 mean partitions hold classes
    the rest barely has.
    """
    labels = np.asarray(labels)
    classes, coded = np.unique(labels, return_inverse=True)
    overall = np.bincount(coded, minlength=classes.size) / labels.size
    distances = []
    for part in parts:
        if part.size:
            local = np.bincount(coded[part], minlength=classes.size) / part.size
            distances.append(0.5 * float(np.abs(local - overall).sum()))
    return float(np.mean(distances)) if distances else 0.0
