"""Partitioners: a disjoint cover of the data, reproducible from the seed, with the skew each scheme promises."""

import numpy as np
import pytest

from aggregation.fl.partition import (
    Partitioning,
    label_skew,
    partition_dirichlet,
    partition_iid,
    partition_indices,
    partition_shards,
    partitioning_parse,
)

# 10 classes of uneven size, as real data sets have.
LABELS = np.repeat(np.arange(10), [80, 95, 100, 70, 120, 90, 85, 110, 60, 100])
SCHEMES = ["iid", "dirichlet:0.1", "dirichlet:1", "shards:2"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("num_partitions", [1, 7, 20])
def test_every_sample_lands_in_exactly_one_partition(scheme, num_partitions):
    # Execute
    parts = partition_indices(scheme, LABELS, num_partitions, seed=3)

    # Assert: sizes add up, and the union is every index once (so no index is in two partitions)
    assert len(parts) == num_partitions
    assert sum(p.size for p in parts) == LABELS.size
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(LABELS.size))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_partitioning_is_reproducible_from_its_seed_and_changes_with_it(scheme):
    # Execute
    first = partition_indices(scheme, LABELS, 10, seed=5)
    again = partition_indices(scheme, LABELS, 10, seed=5)
    other = partition_indices(scheme, LABELS, 10, seed=6)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_dirichlet_label_skew_grows_as_alpha_falls():
    # Prepare: averaged over seeds, so the ordering is a property of alpha, not of one draw
    def mean_skew(alpha: float) -> float:
        return float(np.mean([label_skew(LABELS, partition_dirichlet(LABELS, 10, alpha, seed)) for seed in range(8)]))

    # Execute
    skews = [mean_skew(alpha) for alpha in (1000.0, 1.0, 0.3, 0.1)]

    # Assert: strictly more skewed at every step down, from nearly IID to nearly one class per node
    assert skews == sorted(skews) and len(set(skews)) == 4
    assert skews[0] < 0.1 < 0.5 < skews[-1]


def test_iid_partitions_differ_in_size_by_at_most_one_and_mirror_the_class_mix():
    # Execute
    parts = partition_iid(LABELS.size, 7, seed=1)

    # Assert
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert label_skew(LABELS, parts) < label_skew(LABELS, partition_dirichlet(LABELS, 7, 0.1, seed=1))


def test_dirichlet_leaves_no_partition_below_its_minimum_size():
    # Execute
    parts = partition_dirichlet(LABELS, 30, alpha=0.05, seed=2, min_size=5)

    # Assert
    assert min(p.size for p in parts) >= 5


def test_shards_give_each_partition_at_most_k_classes_when_shards_follow_class_borders():
    # Prepare: 10 classes of 100, cut into 20 shards of 50: no shard straddles two classes
    labels = np.repeat(np.arange(10), 100)

    # Execute
    parts = partition_shards(labels, 10, 2, seed=4)

    # Assert
    assert all(np.unique(labels[p]).size <= 2 for p in parts)
    assert [p.size for p in parts] == [100] * 10


@pytest.mark.parametrize(("text", "expected"), [
    ("iid", Partitioning("iid")),
    ("Dirichlet:0.5", Partitioning("dirichlet", alpha=0.5)),
    ("shards:3", Partitioning("shards", shards=3)),
])
def test_partitioning_parse_reads_the_three_forms(text, expected):
    assert partitioning_parse(text) == expected
    assert str(partitioning_parse(text)) == text.lower()


@pytest.mark.parametrize(("text", "message"), [
    ("dirichlet", "positive concentration"),
    ("dirichlet:-1", "positive concentration"),
    ("dirichlet:nan", "positive concentration"),
    ("shards:0", "whole number of shards"),
    ("shards:two", "whole number of shards"),
    ("random", "unknown partitioning"),
    ("iid:3", "unknown partitioning"),
])
def test_partitioning_parse_refuses_anything_else_with_a_sentence(text, message):
    with pytest.raises(ValueError, match=message):
        partitioning_parse(text)


def test_more_partitions_than_samples_are_refused():
    with pytest.raises(ValueError, match="cannot fill"):
        partition_iid(5, 6, seed=0)
    with pytest.raises(ValueError, match="need at least"):
        partition_shards(LABELS[:30], 10, 4, seed=0)
