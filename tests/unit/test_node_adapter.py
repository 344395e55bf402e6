"""The node SDK's ClientAdapter: a user's client matched to the experiment's tensors, and what it returns checked."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest

from aggregation.fl.manifest import Manifest, TensorSpec
from fedsite_node import ClientFailed, ClientMismatch, NumPyClient
from fedsite_node.adapter import ClientAdapter
from fedsite_node.http import ServerClient

SPEC = Manifest((TensorSpec("conv.weight", (2, 1, 3, 3)), TensorSpec("conv.bias", (2,)),
                 TensorSpec("fc.weight", (3, 8)), TensorSpec("fc.bias", (3,))))
SAME_SHAPES = Manifest((TensorSpec("a.weight", (4, 2)), TensorSpec("a.bias", (2,)), TensorSpec("b.bias", (2,))))


def model(spec: Manifest = SPEC, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(np.float32) for s in spec.shapes()]


class Client(NumPyClient):
    """Keeps its tensors in `order` (manifest indices); fit doubles each array and adds its own position."""

    def __init__(self, order: list[int], spec: Manifest = SPEC, named: bool = False, fit_result: Any = None):
        self.order, self.spec, self.named, self.fit_result = order, spec, named, fit_result
        self.configs: list[dict] = []
        self.received: list[list[np.ndarray]] = []

    def get_parameters(self, config):
        return [np.zeros(self.spec.shapes()[j], np.float32) for j in self.order]

    def fit(self, parameters, config):
        self.configs.append(config)
        self.received.append(parameters)
        if self.fit_result is not None:
            return self.fit_result(parameters)
        return [p * 2 + i for i, p in enumerate(parameters)], 7, {"loss": 0.5, "note": "text stays home"}


class NamedClient(Client):
    def get_parameter_names(self, config):
        return [self.spec.names()[j] for j in self.order]


class ScoringClient(NamedClient):
    def evaluate(self, parameters, config):
        return 0.25, 20, {"accuracy": 0.75}


def bound(client: Any, spec: Manifest = SPEC) -> ClientAdapter:
    adapter = ClientAdapter(client)
    adapter.bind(spec)
    return adapter


@pytest.mark.parametrize(("client", "how"), [
    (NamedClient([3, 1, 0, 2]), "by name"),
    (Client([2, 3, 0, 1]), "by shape"),
    (Client([0, 1, 2, 3]), "identity"),
])
def test_fit_sees_the_clients_order_and_returns_the_manifests(client, how):
    # Prepare
    adapter, base = bound(client), model()

    # Execute
    params, num_examples, metrics = adapter.fit(base, {"server_round": 3})

    # Assert: the client got the right tensor at each of its positions, and its results went back by name
    for i, j in enumerate(client.order):
        np.testing.assert_array_equal(client.received[0][i], base[j])
        np.testing.assert_array_equal(params[j], base[j] * 2 + i)
    assert [p.dtype for p in params] == [np.float32] * 4
    assert (num_examples, metrics) == (7, {"loss": 0.5})
    assert json.loads(client.configs[0]["tensor_names"]) == [SPEC.names()[j] for j in client.order]
    assert client.configs[0]["server_round"] == 3


def test_repeated_shapes_without_names_are_a_mismatch_even_when_positions_fit():
    # A sorted init file and a client in its own order fit position by position and still swap layers.
    with pytest.raises(ClientMismatch, match="'a.bias', 'b.bias' share shape \\[2\\]"):
        bound(Client([0, 1, 2], SAME_SHAPES), SAME_SHAPES)


def test_repeated_shapes_are_fine_with_names_or_when_the_manifest_came_from_such_a_client():
    named = bound(NamedClient([0, 1, 2], SAME_SHAPES), SAME_SHAPES)
    from_node = Manifest(tuple(TensorSpec(f"param_{i}", t.shape) for i, t in enumerate(SAME_SHAPES.tensors)))
    unnamed = bound(Client([0, 1, 2], from_node), from_node)

    assert named.order == unnamed.order == [0, 1, 2]


def test_a_failed_bind_leaves_nothing_half_made():
    class FlakyOnce(NamedClient):
        calls = 0

        def get_parameters(self, config):
            FlakyOnce.calls += 1
            if FlakyOnce.calls == 1:
                raise RuntimeError("disk busy")
            return super().get_parameters(config)

    adapter = ClientAdapter(FlakyOnce([1, 0, 2, 3]))
    with pytest.raises(ClientFailed):
        adapter.bind(SPEC)
    adapter.bind(SPEC)

    assert adapter.order == [1, 0, 2, 3]


def test_duplicate_names_are_a_mismatch():
    class Dup(NamedClient):
        def get_parameter_names(self, config):
            return ["conv.weight", "conv.bias", "conv.weight", "fc.bias"]

    with pytest.raises(ClientMismatch, match="each tensor needs its own name"):
        ClientAdapter(Dup([0, 1, 2, 3])).bind(SPEC)


def test_repeated_shapes_out_of_order_are_a_mismatch_naming_the_tensors():
    with pytest.raises(ClientMismatch, match="tensors 'a.bias', 'b.bias' share shape \\[2\\], so the client's arrays "
                                             "cannot be matched .* by shape: give the client a get_parameter_names"):
        bound(Client([1, 0, 2], SAME_SHAPES), SAME_SHAPES)


def test_two_arrays_of_one_tensors_shape_are_a_mismatch_not_a_silent_duplicate():
    # Prepare: conv.bias's shape twice, fc.bias's shape never
    class Twice(Client):
        def get_parameters(self, config):
            return [np.zeros(s) for s in [(3, 8), (2, 1, 3, 3), (2,), (2,)]]

    # Execute / Assert
    with pytest.raises(ClientMismatch, match=r"no array of the client has the shape \[3\] of tensor 'fc.bias'"):
        bound(Twice([]))


class Wider(Client):
    """The same layers with 4 filters instead of 2."""

    def get_parameters(self, config):
        return [np.zeros(s) for s in [(4, 1, 3, 3), (4,), (3, 8), (3,)]]


@pytest.mark.parametrize(("client", "sentence"), [
    (Client([0, 1, 2]), "the experiment's model has 4 tensors but 3 were given; the first one without a match is "
                        "'fc.bias'"),
    (NamedClient([0, 1, 2]), "the client has no tensor 'fc.bias', which the experiment's model has"),
    (Wider([]), r"the client's tensor 0 has shape \[4, 1, 3, 3\], which no tensor of the experiment's model has "
                r"\(tensor 'conv.weight' should have shape \[2, 1, 3, 3\] but has \[4, 1, 3, 3\]\)"),
])
def test_a_client_whose_tensors_do_not_fit_is_a_mismatch(client, sentence):
    with pytest.raises(ClientMismatch, match=sentence):
        bound(client)


def test_a_name_the_experiment_lacks_is_named():
    class Renamed(NamedClient):
        def get_parameter_names(self, config):
            return ["conv.weight", "conv.bias", "fc.weight", "head.bias"]

    with pytest.raises(ClientMismatch, match="the client has tensor 'head.bias', which the experiment's model"):
        bound(Renamed([0, 1, 2, 3]))


@pytest.mark.parametrize(("result", "error", "sentence"), [
    (lambda p: ([p[0], p[1], p[2].T, p[3]], 5, {}), ClientMismatch,
     r"the parameters fit returned does not fit the experiment's model: tensor 'fc.weight' should have shape \[3, 8\]"),
    (lambda p: (p[:3], 5, {}), ClientMismatch, "the experiment's model has 4 tensors but 3 were given"),
    (lambda p: p, ClientMismatch, r"fit must return \(parameters, num_examples, metrics\)"),
    (lambda p: ([p[0], np.full_like(p[1], np.nan), p[2], p[3]], 5, {}), ClientFailed,
     "the parameters fit returned: tensor 'conv.bias' contains NaN or infinity"),
    (lambda p: (p, 0, {}), ClientFailed, "fit's num_examples must be a whole number of at least 1, got 0"),
    (lambda p: (p, 5.0, {}), ClientFailed, "fit's num_examples must be a whole number of at least 1, got 5.0"),
    (lambda p: (p, 5, [0.1]), ClientFailed, "fit's metrics must be a dict of metric names to numbers, got list"),
    (lambda p: ([str(x) for x in p], 5, {}), ClientFailed, "item 0 holds <U"),
])
def test_what_fit_returns_is_checked(result, error, sentence):
    adapter = bound(Client([0, 1, 2, 3], fit_result=result))

    with pytest.raises(error, match=sentence):
        adapter.fit(model(), {})


def test_a_raising_client_fails_its_call_with_the_exceptions_message():
    def boom(parameters):
        raise RuntimeError("CUDA out of memory (pretend)")

    adapter = bound(Client([0, 1, 2, 3], fit_result=boom))

    with pytest.raises(ClientFailed, match="the client's fit raised RuntimeError: CUDA out of memory"):
        adapter.fit(model(), {})


def test_metrics_keep_finite_numbers_under_the_servers_name_limit():
    metrics = {"loss": np.float32(0.5), "nan": float("nan"), "flag": True, "text": "x", "k" * 65: 1.0, "n": 3}
    adapter = bound(Client([0, 1, 2, 3], fit_result=lambda p: (p, np.int64(4), metrics)))

    _params, num_examples, kept = adapter.fit(model(), {})

    assert (num_examples, kept) == (4, {"loss": 0.5, "n": 3.0})


def test_evaluate_is_used_only_when_the_client_has_its_own():
    class Wrapper:  # what Flower's NumPyClient.to_client() returns: the client is inside
        def __init__(self, numpy_client):
            self.numpy_client = numpy_client

    class Duck:
        def get_parameters(self, config):
            return []

        def fit(self, parameters, config):
            return parameters, 1, {}

        def evaluate(self, parameters, config):
            return 1.0, 2, {}

    scoring = ScoringClient([0, 1, 2, 3])
    assert ClientAdapter(Client([0])).can_evaluate is False
    assert ClientAdapter(scoring).can_evaluate is True
    assert ClientAdapter(Duck()).can_evaluate is True
    wrapped = ClientAdapter(Wrapper(scoring))
    assert wrapped.client is scoring and wrapped.can_evaluate is True
    wrapped.bind(SPEC)
    assert wrapped.evaluate(model(), {}) == (0.25, 20, {"accuracy": 0.75})
    with pytest.raises(ClientMismatch, match="object is not a client: it has no get_parameters or fit method"):
        ClientAdapter(object())


def test_a_client_without_get_parameters_takes_the_experiments_order():
    class FlowerDefault(NumPyClient):
        def fit(self, parameters, config):
            return parameters, 1, {}

    assert bound(FlowerDefault()).order == [0, 1, 2, 3]
    with pytest.raises(ClientMismatch, match="get_parameters returned no tensors, so it cannot provide the initial"):
        ClientAdapter(FlowerDefault()).initial()


def test_initial_parameters_are_named_float32_and_refuse_integer_buffers():
    names, arrays = ClientAdapter(NamedClient([1, 0, 2, 3])).initial()
    unnamed, _ = ClientAdapter(Client([0, 1])).initial()

    class WithCounter(NamedClient):
        def get_parameters(self, config):
            return [np.zeros(2, np.float64), np.array(3)]

        def get_parameter_names(self, config):
            return ["w", "bn.num_batches_tracked"]

    assert names == ["conv.bias", "conv.weight", "fc.weight", "fc.bias"] and unnamed == ["param_0", "param_1"]
    assert [a.shape for a in arrays] == [(2,), (2, 1, 3, 3), (3, 8), (3,)] and arrays[0].dtype == np.float32
    with pytest.raises(ClientMismatch, match="tensor 'bn.num_batches_tracked' has dtype int64; only floating"):
        ClientAdapter(WithCounter([])).initial()


def test_metrics_that_are_numpy_or_tensor_scalars_are_kept_and_the_rest_are_said_to_be_dropped(caplog):
    logging.getLogger("fedsite.node").addHandler(caplog.handler)  # Django's logging config stops propagation
    adapter = ClientAdapter(Client([0, 1, 2, 3], fit_result=lambda p: (p, 5, {
        "loss": np.float32(0.25), "acc": np.array(0.5), "remark": "hi"})))
    adapter.bind(SPEC)

    _params, _n, metrics = adapter.fit(model(seed=0), {})

    logging.getLogger("fedsite.node").removeHandler(caplog.handler)
    assert metrics == {"loss": 0.25, "acc": 0.5}
    assert "metric(s) 'remark' left out" in caplog.text


def test_an_integer_buffer_the_model_lacks_gets_a_hint():
    class WithBuffer(NamedClient):
        def get_parameter_names(self, config):
            return [*super().get_parameter_names(config), "bn.num_batches_tracked"]

        def get_parameters(self, config):
            return [*super().get_parameters(config), np.array(3, dtype=np.int64)]

    with pytest.raises(ClientMismatch, match="integer buffers .such as BatchNorm's num_batches_tracked. are not "
                                             "federated"):
        ClientAdapter(WithBuffer([0, 1, 2, 3])).bind(SPEC)


def test_a_server_address_without_its_scheme_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="needs its scheme, e.g. http://127.0.0.1:5000"):
        ServerClient("127.0.0.1:5000")
