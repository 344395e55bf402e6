"""FedAvg and the aggregation helpers: example weighting, invariances and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregation.fl.aggregate import weighted_average, weighted_metrics
from aggregation.fl.fedavg import FedAvg
from aggregation.fl.registry import STRATEGIES, strategy_create
from aggregation.fl.strategy import AggregationError, FitRes

FAST = settings(max_examples=50, deadline=None, derandomize=True)
finite32 = st.floats(-1e3, 1e3, width=32)


def layers_strategy():
    return st.tuples(
        arrays(np.float32, (3, 2), elements=finite32),
        arrays(np.float32, (2,), elements=finite32),
    ).map(list)


def test_weighted_average_weights_each_update_by_its_examples():
    # Prepare: (1 * 1 + 3 * 4) / 4 = 3.25
    results = [
        ([np.array([1.0, 1.0], dtype=np.float32)], 1),
        ([np.array([4.0, 4.0], dtype=np.float32)], 3),
    ]

    # Execute
    (averaged,) = weighted_average(results)

    # Assert
    assert averaged.dtype == np.float32
    assert np.array_equal(averaged, [3.25, 3.25])


def test_weighted_average_ignores_updates_with_zero_examples():
    results = [([np.array([2.0])], 5), ([np.array([100.0])], 0)]

    assert np.array_equal(weighted_average(results)[0], [2.0])


@FAST
@given(
    layers=layers_strategy(),
    counts=st.lists(st.integers(1, 10_000), min_size=1, max_size=6),
)
def test_identical_updates_average_to_that_update(layers, counts):
    # Execute
    averaged = weighted_average([(layers, n) for n in counts])

    # Assert
    for got, want in zip(averaged, layers):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@FAST
@given(
    updates=st.lists(
        st.tuples(layers_strategy(), st.integers(1, 1000)), min_size=1, max_size=6
    ),
    data=st.data(),
)
def test_weighted_average_does_not_depend_on_the_order_of_results(updates, data):
    # Prepare
    shuffled = data.draw(st.permutations(updates))

    # Execute
    first, second = weighted_average(updates), weighted_average(shuffled)

    # Assert: the sum runs in float32 (at memory speed), so orders may differ by float32 rounding:
    # at most one ulp of the largest input per term, and nothing more.
    scale = max(float(np.abs(layer).max(initial=0.0)) for layers, _ in updates for layer in layers)
    bound = len(updates) * np.finfo(np.float32).eps * max(scale, 1.0)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=bound)


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([], "no results"),
        ([([np.zeros(2)], 0), ([np.ones(2)], 0)], "no examples"),
        ([([np.zeros(2)], -1), ([np.ones(2)], 3)], "negative"),
        ([([np.zeros(2)], 1), ([np.ones(3)], 1)], r"shape \(3,\)"),
        ([([np.zeros(2)], 1), ([np.ones(2), np.ones(1)], 1)], "2 tensors"),
    ],
    ids=[
        "empty",
        "zero-total-weight",
        "negative-weight",
        "shape-mismatch",
        "layer-count-mismatch",
    ],
)
def test_weighted_average_refuses_inputs_it_cannot_aggregate(results, message):
    with pytest.raises(AggregationError, match=message):
        weighted_average(results)


def test_weighted_metrics_average_each_key_over_the_results_that_report_it():
    # Prepare
    results = [
        (1, {"loss": 1.0, "accuracy": 0.5, "node": "a"}),
        (3, {"loss": 5.0}),
        (2, {"accuracy": 0.8, "flag": True}),
    ]

    # Execute
    metrics = weighted_metrics(results)

    # Assert
    assert metrics == pytest.approx({"loss": 4.0, "accuracy": (0.5 + 1.6) / 3})


def test_fedavg_aggregates_by_examples_and_reports_totals():
    # Prepare
    strategy = FedAvg()
    results = [
        FitRes([np.array([1.0, 1.0], dtype=np.float32)], 1, {"loss": 2.0}),
        FitRes([np.array([4.0, 4.0], dtype=np.float32)], 3, {"loss": 6.0}),
    ]

    # Execute
    params, metrics = strategy.aggregate_fit(
        1, [np.zeros(2, dtype=np.float32)], results, ["node-9 timed out"]
    )

    # Assert
    assert np.array_equal(params[0], [3.25, 3.25])
    assert metrics == {"loss": 5.0, "num_examples": 4, "num_results": 2}


def test_fedavg_keeps_the_current_model_when_there_are_no_results():
    params, metrics = FedAvg().aggregate_fit(3, [np.zeros(2)], [], ["node-1 failed"])

    assert params is None
    assert metrics == {}


def test_fedavg_keeps_the_current_model_below_min_results():
    results = [FitRes([np.ones(2)], 10)]

    params, _ = FedAvg(min_results=2).aggregate_fit(1, [np.zeros(2)], results, [])

    assert params is None


def test_registry_builds_fedavg_by_name_with_its_hyperparameters():
    strategy = strategy_create("fedavg", {"min_results": 3})

    assert isinstance(strategy, FedAvg) and strategy.name == "fedavg" == FedAvg.name
    assert strategy.min_results == 3
    assert STRATEGIES["fedavg"] is FedAvg


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedprox9", None, "unknown strategy 'fedprox9'; choose one of: fedavg"),
        ("fedavg", {"mu": 0.1}, "does not accept parameter.*'mu'.*min_results"),
        ("fedavg", {"min_results": 0}, "min_results must be a positive integer"),
        ("fedavg", [1], "must be an object"),
    ],
)
def test_registry_rejects_unknown_strategies_and_parameters(name, params, message):
    with pytest.raises(ValueError, match=message):
        strategy_create(name, params)
