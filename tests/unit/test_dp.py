"""Central differential privacy: clipping, noise scale and seeding, and the adaptive clip norm's direction."""

import math

import numpy as np
import pytest

from aggregation.fl.dp import DPAdaptiveClipping, DPFixedClipping, clip_results
from aggregation.fl.fedavg import FedAvg
from aggregation.fl.registry import strategy_create
from aggregation.fl.strategy import AggregationError, FitRes

CURRENT = [np.zeros(3, np.float32), np.zeros((2, 2), np.float32)]


def update(*delta, n=1):
    """A result whose first tensor moves by `delta` and whose second stays put."""
    return FitRes([np.array(delta, np.float32), np.zeros((2, 2), np.float32)], n)


def test_clipping_scales_long_deltas_to_the_clip_norm_and_leaves_short_ones_alone():
    # Prepare: norms 5 and 0.3 with C = 1
    results = [update(3.0, 4.0, 0.0), update(0.0, 0.3, 0.0)]

    # Execute
    clipped, norms = clip_results(results, CURRENT, 1.0)

    # Assert
    np.testing.assert_allclose(norms, [5.0, 0.3], rtol=1e-6)
    np.testing.assert_allclose(clipped[0].parameters[0], [0.6, 0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[1].parameters[0], [0.0, 0.3, 0.0], rtol=1e-6)


def test_fixed_clipping_without_noise_averages_the_clipped_deltas_and_reports_its_settings():
    # Prepare: deltas (3, 4, 0) -> (0.6, 0.8, 0) and (0, 0.3, 0), averaged with weights 1 and 3
    strategy = DPFixedClipping(FedAvg(), noise_multiplier=0.0, clip_norm=1.0, seed=0)
    results = [update(3.0, 4.0, 0.0, n=1), update(0.0, 0.3, 0.0, n=3)]

    # Execute
    params, metrics = strategy.aggregate_fit(1, CURRENT, results, [])

    # Assert
    np.testing.assert_allclose(params[0], [0.15, (0.8 + 0.9) / 4, 0.0], rtol=1e-6)
    assert metrics["dp_noise_multiplier"] == 0.0 and metrics["dp_clip_norm"] == 1.0
    assert metrics["dp_noise_stddev"] == 0.0 and metrics["num_results"] == 2


def test_fixed_clipping_adds_noise_with_stddev_z_times_c_over_m():
    # Prepare: 4 results that do not move, a large model so the sample stddev is accurate;
    # sigma = 2 * 0.5 / 4 = 0.25 and 40 000 samples estimate it within about 0.4 %.
    current = [np.zeros(40_000, np.float32)]
    results = [FitRes([np.zeros(40_000, np.float32)], 1) for _ in range(4)]
    strategy = DPFixedClipping(FedAvg(), noise_multiplier=2.0, clip_norm=0.5, seed=3)

    # Execute
    params, metrics = strategy.aggregate_fit(1, current, results, [])

    # Assert
    assert metrics["dp_noise_stddev"] == pytest.approx(0.25)
    assert float(np.std(params[0])) == pytest.approx(0.25, rel=0.02)
    assert abs(float(np.mean(params[0]))) < 0.25 * 4 / math.sqrt(40_000)


def test_noise_is_drawn_from_the_seed_and_round_only():
    # Prepare
    results = [update(0.1, 0.2, 0.3), update(-0.1, 0.0, 0.1)]

    def noised(seed, server_round):
        strategy = DPFixedClipping(FedAvg(), noise_multiplier=1.0, clip_norm=1.0, seed=seed)
        return strategy.aggregate_fit(server_round, CURRENT, results, [])[0][0]

    # Execute
    np.random.seed(0)
    first = noised(7, 3)
    np.random.seed(1)  # global numpy state must not matter
    again = noised(7, 3)

    # Assert
    assert np.array_equal(first, again)
    assert not np.array_equal(first, noised(7, 4))
    assert not np.array_equal(first, noised(8, 3))


def test_without_a_seed_the_noise_comes_from_fresh_entropy():
    results = [update(0.1, 0.2, 0.3)]
    strategy = DPFixedClipping(FedAvg(), noise_multiplier=1.0, clip_norm=1.0)

    first = strategy.aggregate_fit(1, CURRENT, results, [])[0][0]
    second = strategy.aggregate_fit(1, CURRENT, results, [])[0][0]

    assert not np.array_equal(first, second)


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_a_zero_norm_update_does_not_break_the_round(mode):
    # Prepare: every node sends the current model back unchanged
    dp = {"mode": mode, "noise_multiplier": 0.5, "clip_norm": 1.0, "seed": 1}
    if mode == "adaptive":
        dp["clipped_count_stddev"] = 1.0
    strategy = strategy_create("fedavg", {"dp": dp})
    results = [FitRes([layer.copy() for layer in CURRENT], 5) for _ in range(3)]

    # Execute
    with np.errstate(all="raise"):
        params, metrics = strategy.aggregate_fit(1, CURRENT, results, [])

    # Assert
    assert all(np.isfinite(layer).all() for layer in params)
    assert math.isfinite(metrics["dp_noise_stddev"]) and metrics["dp_noise_stddev"] > 0


def adaptive(**overrides):
    settings = {"noise_multiplier": 0.0, "clip_norm": 1.0, "target_quantile": 0.5, "clip_learning_rate": 0.2,
                "clipped_count_stddev": 0.0, "seed": 0}
    return DPAdaptiveClipping(FedAvg(), **{**settings, **overrides})


def test_adaptive_clip_norm_moves_down_when_most_updates_are_unclipped():
    # Prepare: all four deltas (norm 0.1) fit under C = 1, so b = 1 and C <- C * exp(-0.2 * (1 - 0.5))
    strategy = adaptive()
    results = [update(0.1, 0.0, 0.0) for _ in range(4)]

    # Execute
    _, metrics = strategy.aggregate_fit(1, CURRENT, results, [])

    # Assert
    assert metrics["dp_clip_norm"] == 1.0
    assert metrics["dp_unclipped_fraction"] == 1.0
    assert strategy.clip_norm == pytest.approx(math.exp(-0.1)) and strategy.clip_norm < 1.0
    assert metrics["dp_next_clip_norm"] == strategy.clip_norm


def test_adaptive_clip_norm_moves_up_when_most_updates_are_clipped():
    # Prepare: one delta of four fits under C = 1: b = 0.25, C <- C * exp(-0.2 * (0.25 - 0.5))
    strategy = adaptive()
    results = [update(5.0, 0.0, 0.0), update(0.0, 3.0, 0.0), update(2.0, 2.0, 0.0), update(0.5, 0.0, 0.0)]

    # Execute
    strategy.aggregate_fit(1, CURRENT, results, [])

    # Assert
    assert strategy.clip_norm == pytest.approx(math.exp(0.05)) and strategy.clip_norm > 1.0


@pytest.mark.parametrize(("delta", "direction"), [(0.01, -1), (10.0, 1)])
def test_adaptive_clip_norm_keeps_its_direction_with_noise_over_several_rounds(delta, direction):
    # Prepare: 20 nodes, noisy count (default stddev 20 / 20 = 1 on a count of 20)
    strategy = adaptive(noise_multiplier=0.5, clipped_count_stddev=None, seed=5)
    results = [update(delta, 0.0, 0.0) for _ in range(20)]
    norms = [strategy.clip_norm]

    # Execute
    for server_round in range(1, 6):
        strategy.aggregate_fit(server_round, CURRENT, results, [])
        norms.append(strategy.clip_norm)

    # Assert
    assert all(np.sign(b - a) == direction for a, b in zip(norms, norms[1:]))


def test_adaptive_clipping_splits_the_noise_multiplier_with_the_count():
    # Andrew et al.: z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2); z = 1, sigma_b = 1 -> (1 - 1/4)^(-1/2)
    strategy = adaptive(noise_multiplier=1.0, clipped_count_stddev=1.0)

    _, metrics = strategy.aggregate_fit(1, CURRENT, [update(0.1, 0.0, 0.0) for _ in range(4)], [])

    assert metrics["dp_noise_multiplier"] == 1.0
    assert metrics["dp_update_noise_multiplier"] == pytest.approx(1 / math.sqrt(0.75))
    assert metrics["dp_noise_stddev"] == pytest.approx(1 / math.sqrt(0.75) * 1.0 / 4)


def test_adaptive_clipping_refuses_a_count_noise_too_small_for_the_noise_multiplier():
    with pytest.raises(AggregationError, match="clipped-count noise stddev must be more than 0.5, got 0.25"):
        adaptive(noise_multiplier=1.0, clipped_count_stddev=None).aggregate_fit(
            1, CURRENT, [update(0.1, 0.0, 0.0) for _ in range(5)], []
        )


def test_dp_wrappers_keep_the_model_and_add_nothing_without_results():
    assert adaptive().aggregate_fit(1, CURRENT, [], []) == (None, {})
    assert DPFixedClipping(FedAvg(), noise_multiplier=1, clip_norm=1).aggregate_fit(1, CURRENT, [], []) == (None, {})


def test_the_registry_wraps_any_strategy_and_passes_its_round_config_through():
    # Execute
    strategy = strategy_create("fedprox", {"proximal_mu": 0.3, "dp": {"mode": "fixed", "noise_multiplier": 1.0,
                                                                      "clip_norm": 2.0}})

    # Assert
    assert isinstance(strategy, DPFixedClipping) and strategy.inner.name == "fedprox"
    assert strategy.configure_fit(1) == {"proximal_mu": 0.3}


@pytest.mark.parametrize(
    ("dp", "message"),
    [
        ({"mode": "central"}, "dp mode must be one of 'fixed', 'adaptive', got 'central'"),
        ({"noise_multiplier": 1.0}, "dp mode must be one of 'fixed', 'adaptive', got None"),
        ({"mode": "fixed", "noise_multiplier": 1.0}, "dp mode 'fixed' needs parameter.*'clip_norm'"),
        ({"mode": "fixed", "noise_multiplier": 1, "clip_norm": 1, "sigma": 1}, "does not accept parameter.*'sigma'"),
        ({"mode": "fixed", "noise_multiplier": -1, "clip_norm": 1}, "noise_multiplier must be a non-negative number"),
        ({"mode": "fixed", "noise_multiplier": 1, "clip_norm": 0}, "clip_norm must be a positive number"),
        ({"mode": "fixed", "noise_multiplier": 1, "clip_norm": 1, "seed": -1}, "seed must be a non-negative integer"),
        ({"mode": "adaptive", "noise_multiplier": 1, "target_quantile": 2}, r"target_quantile must be .* \[0, 1\]"),
        ({"mode": "adaptive", "noise_multiplier": 1, "clipped_count_stddev": 0.1}, "must be more than 0.5"),
        ("fixed", "dp must be an object"),
    ],
)
def test_the_registry_rejects_bad_dp_options_with_a_sentence(dp, message):
    with pytest.raises(ValueError, match=message):
        strategy_create("fedavg", {"dp": dp})


def test_adaptive_state_restores_the_clip_norm_and_refuses_foreign_entries():
    # Prepare
    first = adaptive()
    first.aggregate_fit(1, CURRENT, [update(0.1, 0.0, 0.0)], [])

    # Execute
    second = adaptive()
    second.load_state(first.state_dict())

    # Assert
    assert second.clip_norm == first.clip_norm != 1.0
    with pytest.raises(ValueError, match="cannot use the saved state entries velocity.0"):
        adaptive().load_state({"velocity.0": np.zeros(3)})
