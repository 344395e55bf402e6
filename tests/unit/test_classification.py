"""The MLP as a classifier (softmax cross-entropy), node training with validation metrics, and stop conditions."""

import json
import math

import numpy as np
import pytest

from aggregation.datasets import NodeData, node_data_scale
from aggregation.fl.metrics import accuracy, evaluate, stop_condition_holds, stop_condition_parse
from aggregation.fl.model import MLPSpec, forward, gradients, init_parameters, loss, predict, softmax, train
from aggregation.fl.serde import params_dumps, params_loads, sha256_hex
from nodes_app.runner import DataMismatch, NodeRunner
from nodes_app.training import data_check, fit_and_evaluate, shuffle_seed

CLF = MLPSpec((4, 6, 3), "classification")
DEEP_CLF = MLPSpec((5, 4, 3, 4), "classification")


def blobs(n: int, seed: int, features: int = 4, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters: a problem a small classifier must learn."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (classes, features))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(0, 1, (n, features))).astype(np.float32), y


def node_data(n: int = 120, seed: int = 0) -> NodeData:
    x, y = blobs(n, seed)
    xv, yv = blobs(40, seed + 1000)
    return NodeData("blobs", x, y.astype(np.float32), xv, yv.astype(np.float32), "classification", 3, "blobs")


@pytest.mark.parametrize("spec", [CLF, DEEP_CLF], ids=["one-hidden-layer", "two-hidden-layers"])
def test_classifier_gradients_match_central_differences_for_every_tensor(spec):
    # Prepare: float64 so the finite differences are accurate; biases nonzero so ReLUs vary.
    rng = np.random.default_rng(4)
    params = [p.astype(np.float64) for p in init_parameters(spec, seed=2)]
    params = [p + rng.normal(0, 0.1, p.shape) if p.ndim == 1 else p for p in params]
    x = rng.uniform(-1, 1, (9, spec.layers[0]))
    y = rng.integers(0, spec.classes, 9)

    # Execute
    grads = gradients(spec, params, x, y)

    # Assert
    eps = 1e-6
    for index, p in enumerate(params):
        for flat in rng.choice(p.size, size=min(p.size, 6), replace=False):
            entry = np.unravel_index(flat, p.shape)
            plus, minus = [q.copy() for q in params], [q.copy() for q in params]
            plus[index][entry] += eps
            minus[index][entry] -= eps
            expected = (loss(spec, plus, x, y) - loss(spec, minus, x, y)) / (2 * eps)
            assert grads[index][entry] == pytest.approx(expected, rel=1e-5, abs=1e-8)


def test_cross_entropy_is_the_mean_negative_log_probability_of_the_label():
    # Prepare
    params = init_parameters(CLF, seed=1)
    x, y = blobs(5, seed=2)

    # Execute
    value = loss(CLF, params, x, y)

    # Assert: computed independently from the softmax of the outputs
    probs = softmax(forward(CLF, params, x).astype(np.float64))
    assert value == pytest.approx(-np.mean(np.log(probs[np.arange(5), y])), rel=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_and_the_loss_stay_finite_for_huge_logits():
    # Prepare: an output bias of 1e4 would overflow a naive exp
    params = [p.copy() for p in init_parameters(CLF, seed=0)]
    params[-1][:] = [1e4, -1e4, 0.0]
    x, _ = blobs(3, seed=0)

    # Execute
    value = loss(CLF, params, x, np.array([1, 1, 1]))

    # Assert: about 2e4 nats, the true value, not inf or nan
    assert math.isfinite(value) and value == pytest.approx(2e4, rel=1e-3)


def test_training_a_classifier_lowers_its_loss_and_raises_its_accuracy():
    # Prepare
    x, y = blobs(150, seed=3)
    params = init_parameters(CLF, seed=0)

    # Execute
    new, after = train(CLF, params, x, y, epochs=20, learning_rate=0.1, batch_size=16, seed=1)

    # Assert
    assert after < loss(CLF, params, x, y) / 2
    assert accuracy(CLF, new, x, y) > 0.9 > accuracy(CLF, params, x, y)
    np.testing.assert_array_equal(predict(CLF, new, x), forward(CLF, new, x).argmax(axis=1))


@pytest.mark.parametrize(("labels", "message"), [
    (np.array([0, 1, 3]), r"lie in 0\.\.2"),
    (np.array([0, -1, 2]), r"lie in 0\.\.2"),
    (np.array([0.0, 1.5, 2.0]), "whole numbers"),
    (np.array(["a", "b", "c"]), "must be numbers"),
    (np.array([[0, 1, 2]]), "one class label per sample"),
])
def test_labels_a_classifier_cannot_use_are_refused_with_a_sentence(labels, message):
    x, _ = blobs(3, seed=0)
    with pytest.raises(ValueError, match=message):
        loss(CLF, init_parameters(CLF, 0), x, labels)


def test_the_task_travels_in_the_spec_json_and_the_default_keeps_the_prototypes_json():
    assert MLPSpec().to_dict() == {"kind": "mlp", "layers": [10, 64, 1]}
    assert CLF.to_dict() == {"kind": "mlp", "layers": [4, 6, 3], "task": "classification"}
    assert MLPSpec.from_dict(CLF.to_dict()) == CLF
    assert MLPSpec.from_dict({"kind": "mlp", "layers": [10, 64, 1]}).task == "regression"
    assert CLF.classes == 3 and MLPSpec().classes == 0


@pytest.mark.parametrize(("spec", "message"), [
    ({"layers": [4, 1], "task": "classification"}, "at least 2"),
    ({"layers": [4, 3], "task": "ranking"}, "unknown task"),
])
def test_a_spec_that_cannot_classify_is_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        MLPSpec.from_dict(spec)


def test_one_node_training_alone_reduces_its_loss_and_reports_validation_metrics():
    # Prepare
    data = node_data()
    base = init_parameters(CLF, seed=0)
    config = {"epochs": 5, "learning_rate": 0.1, "batch_size": 16}

    # Execute
    new, metrics = fit_and_evaluate(CLF, base, data, config, seed=7)

    # Assert: the upload's metrics are the training loss and the model's scores on the held-back rows
    assert metrics["loss"] < metrics["loss_before"]
    assert metrics["loss"] == pytest.approx(loss(CLF, new, data.x_train, data.y_train), rel=1e-5)
    assert metrics["val_loss"] == pytest.approx(evaluate(CLF, new, data.x_val, data.y_val)["loss"], rel=1e-6)
    assert metrics["val_accuracy"] > accuracy(CLF, base, data.x_val, data.y_val)


@pytest.mark.parametrize(("spec", "message"), [
    (MLPSpec((5, 6, 3), "classification"), "has 4 features but .* takes 5 inputs"),
    (MLPSpec((4, 6, 1)), "is a classification data set but the experiment's model is a regression"),
    (MLPSpec((4, 6, 2), "classification"), "has 3 classes but .* with 2 classes"),
])
def test_data_that_does_not_fit_the_model_is_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        data_check(spec, node_data())


class OneRoundServer:
    """The few ServerClient calls a node makes for one open round of a classification experiment."""

    def __init__(self, spec: MLPSpec) -> None:
        self.spec, self.token, self.uploads = spec, None, []
        self.model = params_dumps(spec, init_parameters(spec, 1))

    def register(self, node_id, address, enrollment_token=None, data=None):
        return {"node_id": node_id, "token": "t", "address": address}

    def report_done(self):
        return {"status": "done"}

    def current_round(self, wait=0.0, known=None):
        return {"number": 1, "status": "open", "model_version": 0, "config": {"epochs": 3, "learning_rate": 0.1,
                "batch_size": 16}, "progress": {"nodes": []}, "run": {"status": "running"},
                "model_spec": self.spec.to_dict()}

    def download_model(self, version):
        return self.model, sha256_hex(self.model)

    def upload_update(self, number, body):
        self.uploads.append(body)
        return 201, {}


def test_a_node_with_real_data_uploads_its_validation_metrics(tmp_path):
    # Prepare
    server = OneRoundServer(CLF)
    runner = NodeRunner("2", server, tmp_path, data=node_data(), sleep=lambda s: None)

    # Execute
    runner.step()

    # Assert: exactly what the shared training function computes for node 2 in round 1 (a server that does not
    # name a feature scaling gets node-local standardisation, as before federated statistics)
    params, meta = params_loads(CLF, server.uploads[0])
    expected, metrics = fit_and_evaluate(CLF, init_parameters(CLF, 1), node_data_scale(node_data(), "node"),
                                         {"epochs": 3, "learning_rate": 0.1, "batch_size": 16},
                                         seed=shuffle_seed(0, 2, 1))
    assert json.loads(meta["metrics"]) == pytest.approx(metrics)
    assert set(metrics) == {"loss", "loss_before", "val_loss", "val_accuracy"}
    assert meta["num_examples"] == "120"
    for got, want in zip(params, expected):
        np.testing.assert_array_equal(got, want)


def test_a_node_whose_data_does_not_fit_stops_before_training(tmp_path, caplog):
    # Prepare: the experiment's model takes 10 inputs, the node's data has 4 features
    server = OneRoundServer(MLPSpec((10, 8, 3), "classification"))
    runner = NodeRunner("2", server, tmp_path, data=node_data(), sleep=lambda s: None, min_poll_interval=0.0)

    # Execute
    with pytest.raises(DataMismatch, match="node 2 cannot take part: blobs has 4 features"):
        runner.run()

    # Assert
    assert server.uploads == []
    assert "node 2 refused" in caplog.text


def test_a_stop_condition_holds_only_for_patience_rounds_in_a_row():
    assert stop_condition_holds([0.5, 0.96, 0.97], ">=", 0.95, 2)
    assert not stop_condition_holds([0.96, 0.5, 0.97], ">=", 0.95, 2)
    assert not stop_condition_holds([0.97], ">=", 0.95, 2)
    assert not stop_condition_holds([0.97, None], ">=", 0.95, 1)
    assert stop_condition_holds([0.3, 0.09], "<=", 0.1, 1)
    assert not stop_condition_holds([0.3, 0.11], "<=", 0.1, 1)


def test_a_stop_condition_is_parsed_from_metric_comparison_and_threshold():
    assert stop_condition_parse("val_accuracy>=0.95") == ("val_accuracy", ">=", 0.95)
    assert stop_condition_parse(" loss <= 1e-2 ") == ("loss", "<=", 0.01)
    for bad in ("accuracy>0.9", ">=0.9", "loss<=x", "loss<=nan"):
        with pytest.raises(ValueError, match="looks like"):
            stop_condition_parse(bad)
