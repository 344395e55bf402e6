"""The streamed mean (one update at a time) gives what the in-memory FedAvg family gives."""

import numpy as np
import pytest

from aggregation.fl.aggregate import MeanAccumulator, weighted_average
from aggregation.fl.registry import strategy_create
from aggregation.fl.strategy import AggregationError, FitRes

SHAPES = [(40, 7), (7,), (3,)]
WEIGHTED = ["fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi"]
NOT_STREAMING = ["fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"]
PARAMS = {"krum": {"num_malicious": 0}, "multikrum": {"num_malicious": 0}, "bulyan": {"num_malicious": 0}}


def _results(seed, count):
    rng = np.random.default_rng(seed)
    return [FitRes([rng.normal(size=s).astype(np.float32) for s in SHAPES], int(rng.integers(1, 500)),
                   {"loss": float(rng.random())}) for _ in range(count)]


def _streamed(results, expected_weight=None):
    acc = MeanAccumulator(results[0].parameters, expected_weight or sum(r.num_examples for r in results))
    for r in results:
        acc.add(r.parameters, r.num_examples)
    return acc.mean()


@pytest.mark.parametrize("count", [1, 2, 9])
def test_the_streamed_mean_equals_the_in_memory_weighted_average(count):
    results = _results(count, count)
    want = weighted_average([(r.parameters, r.num_examples) for r in results])
    for got, expected in zip(_streamed(results), want):
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_model_larger_than_one_block_is_summed_completely():
    rng = np.random.default_rng(3)
    results = [FitRes([rng.normal(size=(50_000,)).astype(np.float32)], n) for n in (1, 3)]
    got = _streamed(results)[0]
    np.testing.assert_allclose(got, 0.25 * results[0].parameters[0] + 0.75 * results[1].parameters[0], atol=1e-6)


def test_updates_announced_but_never_added_are_left_out_of_the_weights():
    results = _results(5, 4)
    announced = sum(r.num_examples for r in results) + 1234  # a rejected update's examples
    want = weighted_average([(r.parameters, r.num_examples) for r in results])
    for got, expected in zip(_streamed(results, announced), want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_mean_can_be_read_twice_and_more_updates_added_after():
    results = _results(8, 3)
    acc = MeanAccumulator(results[0].parameters, sum(r.num_examples for r in results) + 50)
    for r in results[:2]:
        acc.add(r.parameters, r.num_examples)
    first, second = acc.mean(), acc.mean()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    acc.add(results[2].parameters, results[2].num_examples)
    want = weighted_average([(r.parameters, r.num_examples) for r in results])
    for got, expected in zip(acc.mean(), want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_a_dp_wrapper_never_streams_past_its_per_update_clipping(mode):
    options = {"mode": mode, "noise_multiplier": 0.1, **({"clip_norm": 1.0} if mode == "fixed" else {})}
    wrapped = strategy_create("fedavg", {"dp": options})
    assert not wrapped.streams_mean and wrapped.inner.streams_mean


def test_wrong_shapes_and_weights_are_refused_with_a_sentence():
    results = _results(6, 2)
    acc = MeanAccumulator(results[0].parameters, 10)
    with pytest.raises(AggregationError, match="tensor 0 of result 0 has shape"):
        acc.add([np.zeros((7, 40), np.float32), *results[1].parameters[1:]], 1)
    with pytest.raises(AggregationError, match="has 1 tensors but the model has 3"):
        acc.add(results[1].parameters[:1], 1)
    with pytest.raises(AggregationError, match="negative"):
        acc.add(results[1].parameters, -1)
    with pytest.raises(AggregationError, match="no examples"):
        acc.mean()
    with pytest.raises(AggregationError, match="no examples"):
        MeanAccumulator(results[0].parameters, 0)


@pytest.mark.parametrize("name", WEIGHTED)
def test_each_weighted_strategy_takes_the_same_step_from_a_streamed_mean(name):
    current = [np.full(s, 0.1, np.float32) for s in SHAPES]
    in_memory, streamed = strategy_create(name, {}), strategy_create(name, {})
    assert streamed.streams_mean
    for rnd in (1, 2, 3):  # several rounds, so server state (momentum, moments) is exercised too
        results = _results(10 + rnd, 5)
        want, want_metrics = in_memory.aggregate_fit(rnd, current, results, [])
        metas = [FitRes([], r.num_examples, r.metrics) for r in results]
        got, got_metrics = streamed.aggregate_mean(rnd, current, _streamed(results), metas, [])
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        assert got_metrics == pytest.approx(want_metrics)
        current = want


@pytest.mark.parametrize("name", NOT_STREAMING)
def test_strategies_that_need_every_update_do_not_claim_to_stream(name):
    strategy = strategy_create(name, PARAMS.get(name, {}))
    assert not strategy.streams_mean
    with pytest.raises(NotImplementedError, match="needs every update"):
        strategy.aggregate_mean(1, [], [], [], [])
