"""A server restarted between rounds continues bit-identically from the persisted strategy state."""

import numpy as np
import pytest

from aggregation.fl.data import synthetic_regression
from aggregation.fl.model import MLPSpec, train
from aggregation.fl.registry import strategy_create
from aggregation.fl.serde import dumps, loads
from aggregation.fl.strategy import FitRes

SPEC = MLPSpec((10, 8, 1))
NODES = [synthetic_regression(seed, n=30) for seed in (1, 2, 3)]
ROUNDS, INTERRUPT_AFTER = 5, 2

CONFIGS = {
    "fedadam": ("fedadam", {"eta": 0.05}),
    "dp-adaptive": (
        "fedavg",
        {"dp": {"mode": "adaptive", "noise_multiplier": 0.05, "clip_norm": 0.05, "seed": 42}},
    ),
    "dp-adaptive-fedadam": (
        "fedadam",
        {"eta": 0.05, "dp": {"mode": "adaptive", "noise_multiplier": 0.05, "clipped_count_stddev": 0.5, "seed": 1}},
    ),
    "dp-fixed-fedyogi": ("fedyogi", {"dp": {"mode": "fixed", "noise_multiplier": 0.1, "clip_norm": 0.1, "seed": 9}}),
    "fedavgm": ("fedavgm", {"momentum": 0.9}),
    "fedadagrad": ("fedadagrad", {}),
    "fedyogi": ("fedyogi", {}),
}


def node_results(current, server_round, config):
    results = []
    for index, (x, y) in enumerate(NODES):
        new, node_loss = train(SPEC, current, x, y, epochs=3, learning_rate=float(config.get("learning_rate", 0.05)),
                               seed=index + server_round)
        results.append(FitRes(new, len(x), {"loss": node_loss}))
    return results


def run_rounds(current, rounds, strategy):
    for server_round in rounds:
        results = node_results(current, server_round, strategy.configure_fit(server_round))
        new, _ = strategy.aggregate_fit(server_round, current, results, [])
        current = current if new is None else new
    return current


def persisted(state):
    """What the server stores in ModelVersion.strategy_state and reads back after a restart."""
    tensors, _ = loads(dumps(state))
    return tensors


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_run_resumed_from_the_saved_state_ends_with_the_same_model(config):
    # Prepare
    name, params = CONFIGS[config]
    start = strategy_create(name, params).initialize_parameters(SPEC, seed=0)
    uninterrupted = run_rounds(start, range(1, ROUNDS + 1), strategy_create(name, params))

    # Execute: two rounds, then a new process that only has the model and the saved state
    before = strategy_create(name, params)
    halfway = run_rounds(start, range(1, INTERRUPT_AFTER + 1), before)
    after = strategy_create(name, params)
    after.load_state(persisted(before.state_dict()))
    resumed = run_rounds(halfway, range(INTERRUPT_AFTER + 1, ROUNDS + 1), after)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, resumed))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_run_resumed_without_the_state_diverges_so_the_state_matters(config):
    # Prepare
    name, params = CONFIGS[config]
    start = strategy_create(name, params).initialize_parameters(SPEC, seed=0)
    uninterrupted = run_rounds(start, range(1, ROUNDS + 1), strategy_create(name, params))

    # Execute
    halfway = run_rounds(start, range(1, INTERRUPT_AFTER + 1), strategy_create(name, params))
    forgetful = run_rounds(halfway, range(INTERRUPT_AFTER + 1, ROUNDS + 1), strategy_create(name, params))

    # Assert: a fixed clip norm keeps no state of its own, but the inner FedYogi does
    assert not all(np.array_equal(a, b) for a, b in zip(uninterrupted, forgetful))


def test_the_saved_state_holds_scalars_as_zero_dimensional_arrays():
    # Prepare
    name, params = CONFIGS["dp-adaptive-fedadam"]
    strategy = strategy_create(name, params)
    start = strategy.initialize_parameters(SPEC, seed=0)

    # Execute
    run_rounds(start, [1], strategy)
    state = strategy.state_dict()

    # Assert
    assert state["clip_norm"].shape == () and state["inner.steps"].shape == ()
    assert int(state["inner.steps"]) == 1
    assert sorted(key for key in state if key.startswith("inner.m.")) == [f"inner.m.{i}" for i in range(4)]
