"""Properties every strategy must have, checked with hypothesis on derandomized examples."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregation.fl.registry import STRATEGIES, strategy_create
from aggregation.fl.strategy import AggregationError, FitRes

FAST = settings(max_examples=40, deadline=None, derandomize=True)
SHAPES = [(3, 2), (2,)]
finite32 = st.floats(-1e3, 1e3, width=32)

# Hyperparameters that make each rule accept the result counts drawn below (3 to 7 results).
PARAMS = {"krum": {"num_malicious": 0}, "multikrum": {"num_malicious": 0}, "bulyan": {"num_malicious": 0}}
WEIGHTED = ["fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi"]
ROBUST = ["fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"]


def model_strategy():
    return st.tuples(*(arrays(np.float32, shape, elements=finite32) for shape in SHAPES)).map(list)


def random_results(seed, count):
    """Continuous random results: ties between distances have probability zero."""
    rng = np.random.default_rng(seed)
    return [
        FitRes([rng.normal(size=shape).astype(np.float32) for shape in SHAPES], int(rng.integers(1, 100)))
        for _ in range(count)
    ]


def zeros():
    return [np.zeros(shape, dtype=np.float32) for shape in SHAPES]


def test_the_registry_holds_every_strategy_of_the_issue():
    assert list(STRATEGIES) == [
        "fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi",
        "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan",
    ]
    assert all(cls.name == name for name, cls in STRATEGIES.items())


@pytest.mark.parametrize("name", list(STRATEGIES))
@FAST
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(3, 7), data=st.data())
def test_aggregation_does_not_depend_on_the_order_of_results(name, seed, count, data):
    # Prepare
    results = random_results(seed, count)
    shuffled = data.draw(st.permutations(results))
    current = [layer * 0.5 for layer in random_results(seed + 1, 1)[0].parameters]

    # Execute
    first, _ = strategy_create(name, PARAMS.get(name)).aggregate_fit(1, current, results, [])
    second, _ = strategy_create(name, PARAMS.get(name)).aggregate_fit(1, current, shuffled, [])

    # Assert
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", *ROBUST])
@FAST
@given(model=model_strategy(), counts=st.lists(st.integers(1, 10_000), min_size=3, max_size=6))
def test_identical_updates_aggregate_to_that_update(name, model, counts):
    # Prepare: FedAvgM's first step with server_learning_rate 1 lands exactly on the average
    params = {"momentum": 0.9} if name == "fedavgm" else PARAMS.get(name)
    results = [FitRes([layer.copy() for layer in model], n) for n in counts]

    # Execute
    new, _ = strategy_create(name, params).aggregate_fit(1, zeros(), results, [])

    # Assert
    for got, want in zip(new, model):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg"])
@FAST
@given(models=st.lists(model_strategy(), min_size=1, max_size=7), beta=st.floats(0, 0.49))
def test_median_and_trimmed_mean_stay_within_the_inputs_in_every_coordinate(name, models, beta):
    # Prepare
    params = {"beta": beta} if name == "fedtrimmedavg" else {}
    results = [FitRes(model, 1) for model in models]

    # Execute
    new, _ = strategy_create(name, params).aggregate_fit(1, zeros(), results, [])

    # Assert
    for position, layer in enumerate(new):
        stacked = np.stack([model[position] for model in models])
        assert np.all(layer >= stacked.min(axis=0)) and np.all(layer <= stacked.max(axis=0))


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_strategies_refuse_results_without_examples(name):
    results = [FitRes(zeros(), 0), FitRes([layer + 1 for layer in zeros()], 0)]

    with pytest.raises(AggregationError, match="hold no examples in total"):
        strategy_create(name).aggregate_fit(1, zeros(), results, [])


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_reports_its_results_as_json_metrics(name):
    # Prepare
    results = random_results(3, 5)

    # Execute
    new, metrics = strategy_create(name, PARAMS.get(name)).aggregate_fit(2, zeros(), results, ["node-7 failed"])

    # Assert
    assert [layer.shape for layer in new] == SHAPES and all(layer.dtype == np.float32 for layer in new)
    assert metrics["num_results"] == 5
    assert metrics["num_examples"] == sum(r.num_examples for r in results)
    assert json.loads(json.dumps(metrics)) == metrics  # stored as JSON with the round
