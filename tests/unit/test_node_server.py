"""The node's own HTTP API, served on a free port, exercised with real HTTP requests."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from aggregation.fl.data import synthetic_regression
from aggregation.fl.model import MLPSpec, flatten, forward, loss
from nodes_app.nodeserver import MAX_BODY_BYTES, NodeHTTPServer, start_node_server
from nodes_app.runner import NodeRunner

SPEC = MLPSpec((10, 64, 1))


class NoServer:
    """The node API never needs the federation server; any call would be a bug."""

    token = None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the node API called the server client ({name})")


@pytest.fixture
def runner(tmp_path: Any) -> NodeRunner:
    return NodeRunner("7", NoServer(), tmp_path)  # type: ignore[arg-type]


@pytest.fixture
def node(runner: NodeRunner) -> Iterator[str]:
    server: NodeHTTPServer = start_node_server(runner, "127.0.0.1", 0)
    yield server.url
    server.shutdown()


def post(url: str, payload: Any) -> requests.Response:
    return requests.post(url, data=json.dumps(payload), headers={"Content-Type": "application/json"}, timeout=10)


def data(n: int = 30, seed: int = 99) -> tuple[list[list[float]], list[float]]:
    x, y = synthetic_regression(seed, n=n)
    return x.tolist(), y[:, 0].tolist()


def assert_error(resp: requests.Response, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    return body


def test_status_reports_the_node_without_side_effects(node: str, runner: NodeRunner) -> None:
    first = requests.get(f"{node}/status", timeout=10).json()
    second = requests.get(f"{node}/status", timeout=10).json()

    assert first == second
    assert (first["status"], first["message"], first["node_id"]) == ("running", "Node is active", "7")
    assert set(first) >= {"round", "model_version", "model_sha256", "last_loss", "state"}
    assert first["model_sha256"] == runner.model_sha256


def test_update_model_replaces_the_local_model(node: str, runner: NodeRunner) -> None:
    vec = np.linspace(-0.1, 0.1, SPEC.num_params()).astype(np.float32)

    resp = post(f"{node}/message", {"UpdateModel": {"params": vec.tolist()}})

    assert resp.status_code == 200 and resp.json()["status"] == "success"
    np.testing.assert_array_equal(flatten(runner.params), vec)


def test_update_model_with_the_wrong_length_is_refused(node: str, runner: NodeRunner) -> None:
    before = flatten(runner.params).copy()

    body = assert_error(post(f"{node}/message", {"UpdateModel": {"params": [0.0] * 768}}))

    assert "769" in body["detail"] and "768" in body["detail"]
    np.testing.assert_array_equal(flatten(runner.params), before)


def test_update_model_with_nan_is_refused(node: str) -> None:
    raw = json.dumps({"UpdateModel": {"params": [float("nan")] + [0.0] * 768}})  # json emits NaN tokens
    resp = requests.post(f"{node}/message", data=raw, timeout=10)
    assert assert_error(resp)["error"] == "not_finite"


def test_train_lowers_the_loss(node: str, runner: NodeRunner) -> None:
    x, y = data()
    start = loss(SPEC, runner.params, np.array(x, dtype=np.float32), np.array(y, dtype=np.float32))

    resp = post(f"{node}/message", {"Train": {"data": x, "labels": y}})

    assert resp.status_code == 200
    answer = resp.json()
    assert answer["status"] == "success"
    assert answer["loss_before"] == pytest.approx(start, rel=1e-5) and answer["loss"] < start
    assert runner.status_snapshot()["last_loss"] == answer["loss"]


@pytest.mark.parametrize("shape", ["object", "prototype pair with flat data"])
def test_train_endpoint_accepts_both_body_shapes(node: str, shape: str) -> None:
    x, y = data(n=12)
    payload: Any = {"data": x, "labels": y} if shape == "object" else [np.ravel(x).tolist(), [[v] for v in y]]

    resp = post(f"{node}/train", payload)

    assert resp.status_code == 200 and resp.json()["status"] == "success"


@pytest.mark.parametrize(
    "payload",
    [
        {"data": data(30)[0], "labels": data(29)[1]},  # one label short
        {"data": [], "labels": []},
        {"data": [[1.0] * 9], "labels": [1.0]},  # 9 features, not 10
        {"data": [[1.0] * 10, [1.0] * 9], "labels": [1.0, 2.0]},  # ragged
        {"data": [["a"] * 10], "labels": [1.0]},
        {"data": [[1.0] * 10]},
        [[1.0] * 10],
    ],
)
def test_train_with_bad_data_is_a_400_not_a_200(node: str, payload: Any) -> None:
    assert_error(post(f"{node}/train", payload))


def test_predict_returns_one_prediction_per_row_equal_to_forward(node: str, runner: NodeRunner) -> None:
    x, _ = data(n=5)

    resp = post(f"{node}/message", {"Predict": {"data": x}})

    assert resp.status_code == 200
    expected = forward(SPEC, runner.params, np.array(x, dtype=np.float32))[:, 0]
    np.testing.assert_allclose(resp.json()["predictions"], expected, rtol=1e-6)


def test_bad_json_is_a_400(node: str) -> None:
    assert assert_error(requests.post(f"{node}/message", data=b"{not json", timeout=10))["error"] == "bad_json"


@pytest.mark.parametrize("payload", [{"Explode": {}}, {"Train": {}, "Predict": {}}, "Predict", []])
def test_an_unknown_or_malformed_message_is_a_400(node: str, payload: Any) -> None:
    assert_error(post(f"{node}/message", payload))


def test_unknown_paths_get_a_json_404(node: str) -> None:
    assert_error(requests.get(f"{node}/nope", timeout=10), 404)
    assert_error(post(f"{node}/status", {}), 404)


def test_an_oversized_body_is_refused_before_it_is_read(node: str) -> None:
    host, port = node.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/train")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()

    resp = conn.getresponse()

    assert resp.status == 413 and json.loads(resp.read())["error"] == "too_large"
    conn.close()


TOKEN = "node-api-secret"


@pytest.fixture
def locked_node(runner: NodeRunner) -> Iterator[str]:
    server = start_node_server(runner, "127.0.0.1", 0, api_token=TOKEN)
    yield server.url
    server.shutdown()


@pytest.mark.parametrize(("headers", "error"), [({}, "missing_token"),
                                                ({"Authorization": "Bearer wrong"}, "bad_token"),
                                                ({"Authorization": f"Basic {TOKEN}"}, "bad_token")])
def test_a_node_api_with_a_token_refuses_requests_without_it(locked_node: str, runner: NodeRunner,
                                                             headers: dict[str, str], error: str) -> None:
    before = runner.model_sha256
    x, y = data()
    flat = flatten(runner.params).tolist()

    answers = [
        requests.get(f"{locked_node}/status", headers=headers, timeout=10),
        requests.post(f"{locked_node}/train", json={"data": x, "labels": y}, headers=headers, timeout=10),
        requests.post(f"{locked_node}/message", json={"UpdateModel": {"params": [0.0] * len(flat)}},
                      headers=headers, timeout=10),
    ]

    assert [(a.status_code, a.json()["error"]) for a in answers] == [(401, error)] * 3
    assert runner.model_sha256 == before and runner.last_loss is None


def test_a_node_api_with_a_token_serves_its_holder(locked_node: str, runner: NodeRunner) -> None:
    x, y = data()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    trained = requests.post(f"{locked_node}/train", json={"data": x, "labels": y}, headers=auth, timeout=10)
    status = requests.get(f"{locked_node}/status", headers=auth, timeout=10)

    assert trained.status_code == 200 and status.json()["last_loss"] == trained.json()["loss"]


def test_an_unauthenticated_huge_body_is_refused_before_it_is_read(locked_node: str) -> None:
    # Only the headers are sent: the answer must not wait for 9 MB that never come.
    host, port = locked_node.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.putrequest("POST", "/train")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(9 * 1024 * 1024))
    conn.endheaders()

    response = conn.getresponse()

    assert response.status == 401 and response.getheader("Connection") == "close"
    conn.close()
