"""Federated feature statistics (aggregation.fl.features): sums that combine into the pooled statistics, checks
that refuse impossible sums, local DP noise, and the fixed-range scaling."""

import numpy as np
import pytest

from aggregation.fl.features import (
    FeatureStats,
    Scaling,
    feature_stats,
    feature_stats_check,
    feature_stats_combine,
    scaling_fixed_range,
)


def test_combined_sums_give_the_mean_and_deviation_of_all_rows_pooled():
    # Prepare: three parties of different sizes and very different means (label skew moves the means)
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc, 2.0, (n, 4)) for loc, n in ((0, 30), (5, 7), (-3, 50))]

    # Execute
    scaling = feature_stats_combine([feature_stats(p) for p in parts])

    # Assert
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(scaling.shift, pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaling.scale, pooled.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(scaling.apply(pooled).mean(axis=0), 0, atol=1e-5)


def test_a_constant_feature_is_only_centred_and_a_slightly_negative_variance_is_clamped():
    # Prepare: feature 1 constant; feature 0's sum of squares rounded a hair below its square mean
    stats = FeatureStats(4, np.array([4.0, 12.0]), np.array([4.0 - 1e-12, 36.0]))

    # Execute
    scaling = feature_stats_combine([stats])

    # Assert
    np.testing.assert_array_equal(scaling.scale, [1.0, 1.0])
    np.testing.assert_array_equal(scaling.shift, [1.0, 3.0])


@pytest.mark.parametrize(("stats", "message"), [
    (FeatureStats(0, np.ones(2), np.ones(2)), "count must be a whole number of rows, at least 1"),
    (FeatureStats(3, np.array([1.0, np.nan]), np.ones(2)), "sum contains NaN or infinity"),
    (FeatureStats(3, np.ones(2), np.ones(3)), "sum has 2 features but sum_sq has 3"),
    (FeatureStats(3, np.ones(2), np.array([1.0, -1.0])), "sum_sq cannot be negative"),
    (FeatureStats(3, np.ones(3), np.ones(3)), "the statistics cover 3 features, the experiment's model takes 2"),
])
def test_impossible_statistics_are_refused_with_a_sentence(stats, message):
    with pytest.raises(ValueError, match=message):
        feature_stats_check(stats, 2)


def test_local_dp_noise_is_gaussian_around_the_clipped_sums_and_needs_a_clip_bound():
    # Prepare
    x = np.random.default_rng(1).uniform(-3, 3, (200, 3))

    # Execute: many noisy releases of the same table
    releases = [feature_stats(x, noise_multiplier=0.5, clip=2.0, rng=np.random.default_rng(s)) for s in range(400)]

    # Assert: centred on the sums of the clipped values, with stddev z·C·√d (sum) and z·C²·√d (sum_sq)
    clipped = np.clip(x, -2, 2)
    sums = np.array([r.sum for r in releases])
    squares = np.array([r.sum_sq for r in releases])
    np.testing.assert_allclose(sums.mean(axis=0), clipped.sum(axis=0), atol=0.3)
    np.testing.assert_allclose(sums.std(axis=0), 0.5 * 2 * np.sqrt(3), rtol=0.15)
    np.testing.assert_allclose(squares.std(axis=0), 0.5 * 4 * np.sqrt(3), rtol=0.15)
    assert all(r.count == 200 for r in releases)
    with pytest.raises(ValueError, match="positive clip bound"):
        feature_stats(x, noise_multiplier=1.0)


def test_a_scaling_round_trips_through_json_and_refuses_a_zero_scale():
    scaling = Scaling(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    again = Scaling.from_dict(scaling.to_dict())
    np.testing.assert_array_equal(again.apply(np.array([[4.0, 6.0]])), [[1.0, 1.0]])
    with pytest.raises(ValueError, match="positive scales"):
        Scaling.from_dict({"shift": [0.0], "scale": [0.0]})
    with pytest.raises(ValueError, match="the scaling is for 2 features, the data has 3"):
        scaling.apply(np.ones((1, 3)))


def test_the_fixed_range_maps_digits_to_0_to_1_and_is_refused_for_unknown_data():
    np.testing.assert_allclose(scaling_fixed_range("digits", 2).apply(np.array([[0.0, 16.0]])), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="csv:a.csv has no known fixed input range"):
        scaling_fixed_range("csv:a.csv", 2)
