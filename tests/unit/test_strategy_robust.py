"""FedMedian, FedTrimmedAvg, Krum, Multi-Krum and Bulyan: small hand-computed cases and their refusals."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregation.fl.bulyan import Bulyan
from aggregation.fl.fedmedian import FedMedian
from aggregation.fl.fedtrimmedavg import FedTrimmedAvg
from aggregation.fl.krum import Krum
from aggregation.fl.multikrum import MultiKrum
from aggregation.fl.robust import coordinate_median, mean_around_median, pairwise_sq_distances
from aggregation.fl.strategy import AggregationError, FitRes


def points(*values, examples=1):
    """One result per value: a model with a 2-vector (value, -value) and a 1x1 matrix holding value."""
    return [
        FitRes([np.array([v, -v], dtype=np.float32), np.array([[v]], dtype=np.float32)], examples, {"loss": 1.0})
        for v in values
    ]


CURRENT = [np.zeros(2, dtype=np.float32), np.zeros((1, 1), dtype=np.float32)]


def first_coordinate(params):
    return float(params[0][0])


def test_fedmedian_takes_the_median_of_each_coordinate():
    # Prepare: per coordinate the values are (1, 3, 2), (5, 0, 2) and (2, 9, 2)
    results = [FitRes([np.array(v, dtype=np.float32)], 1) for v in ([1, 5, 2], [3, 0, 9], [2, 2, 2])]

    # Execute
    params, metrics = FedMedian().aggregate_fit(1, [np.zeros(3, dtype=np.float32)], results, [])

    # Assert
    assert params[0].dtype == np.float32
    assert params[0].tolist() == [2.0, 2.0, 2.0]
    assert metrics["num_results"] == 3


def test_fedmedian_of_an_even_count_averages_the_two_middle_values():
    params, _ = FedMedian().aggregate_fit(1, CURRENT, points(0, 10, 1, 3), [])

    # (1 + 3) / 2 in every coordinate
    assert params[0].tolist() == [2.0, -2.0] and params[1].tolist() == [[2.0]]


def test_fedtrimmedavg_drops_beta_of_the_values_at_each_end():
    # Prepare: beta 0.25 of 4 results cuts one value at each end: mean(2, 3)
    results = points(1, 2, 3, 100)

    # Execute
    params, metrics = FedTrimmedAvg(beta=0.25).aggregate_fit(1, CURRENT, results, [])

    # Assert
    assert params[0].tolist() == [2.5, -2.5] and params[1].tolist() == [[2.5]]
    assert metrics["num_trimmed"] == 2


def test_fedtrimmedavg_rounds_the_cut_down_so_a_small_beta_is_the_plain_mean():
    # int(0.2 * 4) = 0 values are cut: (1 + 2 + 3 + 100) / 4
    params, metrics = FedTrimmedAvg(beta=0.2).aggregate_fit(1, CURRENT, points(1, 2, 3, 100), [])

    assert first_coordinate(params) == pytest.approx(26.5)
    assert metrics["num_trimmed"] == 0


def test_krum_picks_the_result_with_the_smallest_sum_to_its_nearest_neighbours():
    # Prepare: f = 0, n = 4, so each score sums the n - 2 = 2 nearest squared distances. In the first
    # coordinate: 0 -> 1 + 6.25, 1 -> 1 + 2.25, 2.5 -> 2.25 + 6.25, 10 -> 56.25 + 81; the other two
    # coordinates repeat the same distances, which triples every score and changes no ranking.
    results = points(0, 1, 2.5, 10)

    # Execute
    params, metrics = Krum().aggregate_fit(1, CURRENT, results, [])

    # Assert: Krum returns the chosen model itself
    assert first_coordinate(params) == 1.0 and params[1].tolist() == [[1.0]]
    assert metrics["num_selected"] == 1


@pytest.mark.parametrize(("keep", "expected"), [(2, 0.5), (3, 3.5 / 3)])
def test_multikrum_averages_the_best_scored_results(keep, expected):
    # Same scores as above: ranking 1, 0, 2.5, 10
    params, metrics = MultiKrum(num_to_keep=keep).aggregate_fit(1, CURRENT, points(0, 1, 2.5, 10), [])

    assert first_coordinate(params) == pytest.approx(expected)
    assert metrics["num_selected"] == keep


def test_multikrum_keeps_n_minus_f_by_default():
    # n = 5, f = 1: 4 are kept and the far result is the one left out: mean(0, 1, 2, 3)
    params, metrics = MultiKrum(num_malicious=1).aggregate_fit(1, CURRENT, points(0, 1, 2, 3, 50), [])

    assert first_coordinate(params) == pytest.approx(1.5)
    assert metrics["num_selected"] == 4


def test_bulyan_averages_the_values_closest_to_the_median_of_its_krum_selection():
    # Prepare: f = 1, n = 7, so theta = 5 results are chosen by repeated Krum and beta = 3 of them
    # are averaged per coordinate. Six honest results near 1 and one at 1000: the far one is never
    # chosen, and of the five chosen the three nearest the median are 0.9, 1.0 and 1.1.
    results = points(0.9, 1.0, 1.1, 0.7, 1.3, 0.2, 1000.0)

    # Execute
    params, metrics = Bulyan(num_malicious=1).aggregate_fit(1, CURRENT, results, [])

    # Assert
    assert first_coordinate(params) == pytest.approx(1.0, abs=1e-6)
    assert params[1][0, 0] == pytest.approx(1.0, abs=1e-6)
    assert metrics["num_selected"] == 5


def test_bulyan_matches_a_direct_transcription_of_the_paper():
    # Prepare: continuous random data, so no ties make the choice ambiguous
    rng = np.random.default_rng(5)
    values = rng.normal(size=(11, 4))
    values[9] += 30.0  # two results far away, on opposite sides
    values[10] -= 30.0
    results = [FitRes([v.astype(np.float32)], 1) for v in values]
    f = 2

    def krum_index(candidates):
        # Krum's score, ties to the candidate closer to all the others (Krum's documented tie-break)
        k = max(len(candidates) - f - 2, 1)
        keys = []
        for i in candidates:
            dists = sorted(float(np.sum((values[i] - values[j]) ** 2)) for j in candidates if j != i)
            keys.append((sum(dists[:k]), sum(dists)))
        return candidates[min(range(len(candidates)), key=keys.__getitem__)]

    remaining, chosen = list(range(11)), []
    for _ in range(11 - 2 * f):
        pick = krum_index(remaining)
        chosen.append(pick)
        remaining.remove(pick)
    beta = len(chosen) - 2 * f
    expected = []
    for column in range(4):
        column_values = [float(values[i].astype(np.float32)[column]) for i in chosen]
        median = float(np.median(column_values))
        closest = sorted(column_values, key=lambda v: abs(v - median))[:beta]
        expected.append(sum(closest) / beta)

    # Execute
    params, _ = Bulyan(num_malicious=f).aggregate_fit(1, [np.zeros(4, dtype=np.float32)], results, [])

    # Assert
    assert {9, 10} <= set(remaining)
    np.testing.assert_allclose(params[0], expected, rtol=1e-6)


def test_mean_around_median_keeps_beta_values_per_coordinate():
    # Column 0: median 3, nearest three 3, 2, 4 -> 3. Column 1: median 10, nearest 10, 11, 8 -> 29/3.
    stack = np.array([[1.0, 10.0], [2.0, 11.0], [3.0, 8.0], [4.0, 100.0], [9.0, -50.0]])

    np.testing.assert_allclose(mean_around_median(stack, 3), [3.0, 29.0 / 3.0])


def test_pairwise_distances_match_direct_differences_even_far_from_the_origin():
    # Prepare: rows close together but with a large common offset, where the Gram identity would
    # lose most digits without centring.
    rng = np.random.default_rng(0)
    flat = 1e4 + rng.normal(scale=1e-3, size=(6, 50))

    # Execute
    dist = pairwise_sq_distances(flat)

    # Assert
    direct = np.array([[np.sum((a - b) ** 2) for b in flat] for a in flat])
    np.testing.assert_allclose(dist, direct, rtol=1e-6, atol=1e-15)
    assert np.array_equal(dist, dist.T) and np.all(np.diag(dist) == 0)


@pytest.mark.parametrize(
    ("strategy", "count", "message"),
    [
        (Krum(num_malicious=2), 6, r"krum with num_malicious=2 needs at least 7 results \(2f \+ 3\), got 6"),
        (MultiKrum(num_malicious=1), 4, "multikrum with num_malicious=1 needs at least 5 results"),
        (Bulyan(num_malicious=1), 6, r"bulyan with num_malicious=1 needs at least 7 results \(4f \+ 3\), got 6"),
        (Bulyan(num_malicious=2), 10, "needs at least 11 results"),
        (MultiKrum(num_malicious=1, num_to_keep=5), 5, "cannot keep 5 of 5 results when 1 may be malicious"),
    ],
    ids=["krum", "multikrum", "bulyan-f1", "bulyan-f2", "multikrum-keep"],
)
def test_robust_rules_refuse_too_few_results_for_their_guarantee(strategy, count, message):
    with pytest.raises(AggregationError, match=message):
        strategy.aggregate_fit(1, CURRENT, points(*range(count)), [])


@pytest.mark.parametrize("cls", [FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan])
def test_robust_rules_keep_the_model_without_results_or_below_min_results(cls):
    assert cls().aggregate_fit(1, CURRENT, [], ["node-1 timed out"]) == (None, {})
    assert cls(min_results=4).aggregate_fit(1, CURRENT, points(1, 2, 3), []) == (None, {})


@pytest.mark.parametrize("cls", [FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan])
def test_robust_rules_refuse_results_shaped_unlike_the_model(cls):
    results = points(1, 2, 3) + [FitRes([np.zeros(3, dtype=np.float32), np.zeros((1, 1))], 1)]

    with pytest.raises(AggregationError, match=r"tensor 0 of result 3 has shape \(3,\)"):
        cls().aggregate_fit(1, CURRENT, results, [])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(stack=arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=st.floats(-1e6, 1e6)))
def test_coordinate_median_equals_numpys_median(stack):
    assert np.array_equal(coordinate_median(stack), np.median(stack, axis=0))
