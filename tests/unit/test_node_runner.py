"""NodeRunner driven step by step against an in-memory fake of the server's HTTP client."""

from __future__ import annotations

import copy
import json
import logging
import stat
import threading
from typing import Any

import numpy as np
import pytest

from aggregation.fl.data import synthetic_regression
from aggregation.fl.model import MLPSpec, init_parameters, train
from aggregation.fl.serde import params_dumps, params_loads, sha256_hex
from fedsite_node.http import ServerRejected, ServerUnavailable
from nodes_app.runner import NodeRunner, RegistrationError, default_seed

SPEC = MLPSpec((10, 64, 1))
CONFIG = {"epochs": 5, "learning_rate": 0.05, "batch_size": 0}


def round_info(number: int = 1, status: str = "open", version: int = 1, run: str = "running") -> dict[str, Any]:
    return {
        "experiment": "default", "number": number, "status": status, "model_version": version, "deadline": None,
        "config": CONFIG, "progress": {"received": 0, "required": 3, "min_nodes": 2, "nodes": []},
        "run": {"status": run, "max_rounds": 0, "model_version": version},
        "model_spec": {"kind": "mlp", "layers": [10, 64, 1]},
    }


class FakeClient:
    """Behaves like ServerClient talking to a well-behaved server; knobs simulate failures."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.tokens: dict[str, str] = {}
        self.models = {v: params_dumps(SPEC, init_parameters(SPEC, v)) for v in (1, 2)}
        self.info = round_info()
        self.uploads: list[tuple[int, bytes]] = []
        self.polls: list[tuple[float, int | None]] = []
        self.down = 0  # this many next calls fail as if the server were unreachable
        self.tamper = False
        self.upload_error: Exception | None = None
        self.registered_data: list[dict[str, Any] | None] = []
        self.done = 0
        self.done_error: Exception | None = None

    def _maybe_down(self) -> None:
        if self.down:
            self.down -= 1
            raise ServerUnavailable("GET /api/rounds/current: ConnectionError: connection refused")

    def register(self, node_id: str, address: str, enrollment_token: str | None = None,
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
        self._maybe_down()
        self.registered_data.append(data)
        if self.token is not None:
            if self.tokens.get(node_id) != self.token:
                raise ServerRejected(401, "bad_token", "The token is not valid.", {})
            return {"node_id": node_id, "address": address}
        if node_id in self.tokens:
            raise ServerRejected(409, "node_exists", f"Node {node_id} is already registered.", {})
        self.tokens[node_id] = f"secret-{node_id}-{len(self.tokens)}"
        return {"node_id": node_id, "token": self.tokens[node_id], "address": address}

    def current_round(self, wait: float = 0.0, known: int | None = None) -> dict[str, Any]:
        self._maybe_down()
        self.polls.append((wait, known))
        return copy.deepcopy(self.info)

    def download_model(self, version: int | str) -> tuple[bytes, str]:
        body = self.models[max(self.models) if version == "latest" else version]
        return body, "0" * 64 if self.tamper else sha256_hex(body)

    def upload_update(self, round_number: int, body: bytes) -> tuple[int, dict[str, Any]]:
        self._maybe_down()
        if self.upload_error:
            raise self.upload_error
        self.uploads.append((round_number, body))
        return 201, {"round": round_number, "node_id": "1", "sha256": sha256_hex(body),
                     "received": len(self.uploads), "required": 3, "status": "open"}

    def report_done(self) -> dict[str, Any]:
        if self.done_error:
            raise self.done_error
        self.done += 1
        return {"node_id": "1", "status": "done"}


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def runner(fake: FakeClient, tmp_path: Any, sleeps: list[float]) -> NodeRunner:
    return NodeRunner("1", fake, tmp_path / "node1", address="http://127.0.0.1:8002", poll_wait=25.0,
                      min_poll_interval=0.0, sleep=sleeps.append)


def test_step_trains_and_uploads_exactly_once_per_round(runner: NodeRunner, fake: FakeClient) -> None:
    # Execute
    first, second = runner.step(), runner.step()

    # Assert: one upload, and it is exactly the deterministic training result on the node's data
    assert (first, second) == (True, False)
    assert [number for number, _ in fake.uploads] == [1]
    params, meta = params_loads(SPEC, fake.uploads[0][1])
    x, y = synthetic_regression(1, n=100)
    expected, expected_loss = train(SPEC, init_parameters(SPEC, 1), x, y, **CONFIG, seed=1 + 1)
    for got, want in zip(params, expected):
        np.testing.assert_array_equal(got, want)
    metrics = json.loads(meta["metrics"])
    assert meta["num_examples"] == "100" and meta["base_version"] == "1"
    assert metrics["loss"] == pytest.approx(expected_loss) and metrics["loss"] < metrics["loss_before"]
    # The second poll long-polls for a round other than the one already done.
    assert fake.polls == [(25.0, None), (25.0, 1)]
    assert runner.status_snapshot()["model_version"] == 1


def test_step_uploads_again_when_the_next_round_opens(runner: NodeRunner, fake: FakeClient) -> None:
    runner.step()
    fake.info = round_info(number=2, version=2)

    assert runner.step() is True
    assert [number for number, _ in fake.uploads] == [1, 2]
    assert params_loads(SPEC, fake.uploads[1][1])[1]["base_version"] == "2"


def test_step_does_nothing_for_a_round_that_is_not_open_or_already_has_our_update(
    runner: NodeRunner, fake: FakeClient
) -> None:
    fake.info = round_info(status="aggregating")
    assert runner.step() is False
    fake.info = round_info(number=2)
    fake.info["progress"]["nodes"] = ["1"]
    assert runner.step() is False
    assert fake.uploads == []


def test_step_refuses_a_model_whose_sha256_does_not_match(
    runner: NodeRunner, fake: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.tamper = True
    with caplog.at_level(logging.ERROR, logger="fedsite.node"):
        assert runner.step() is False
    assert fake.uploads == []
    assert "sha256 mismatch" in caplog.text

    # Once the server sends intact bytes, the same round is trained after all.
    fake.tamper = False
    assert runner.step() is True
    assert len(fake.uploads) == 1


def test_a_closed_round_is_logged_and_not_retried(
    runner: NodeRunner, fake: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.upload_error = ServerRejected(409, "round_closed", "Round 1 is closed.", {"current_round": 2})
    with caplog.at_level(logging.INFO, logger="fedsite.node"):
        runner.step()
        fake.upload_error = None
        runner.step()
    assert fake.uploads == []
    assert "round 1 closed before our upload (server is at round 2)" in caplog.text


def test_an_upload_interrupted_by_an_outage_is_resent_without_retraining(
    runner: NodeRunner, fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.upload_error = ServerUnavailable("POST /api/rounds/1/updates: connection reset")
    assert runner.step() is False
    fake.upload_error = None
    monkeypatch.setattr("nodes_app.training.train", lambda *a, **k: pytest.fail("trained twice"))

    assert runner.step() is True
    assert len(fake.uploads) == 1


def test_the_token_is_stored_0600_and_reused_by_the_next_runner(
    runner: NodeRunner, fake: FakeClient, tmp_path: Any
) -> None:
    runner.ensure_registered()
    token_file = tmp_path / "node1" / "token"
    assert token_file.read_text() == fake.tokens["1"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    # A restart: a new runner and a client without a token.
    fake.token = None
    again = NodeRunner("1", fake, tmp_path / "node1", sleep=lambda s: None)
    again.ensure_registered()
    assert fake.token == token_file.read_text() and list(fake.tokens) == ["1"]


def test_a_stored_token_the_server_rejects_leads_to_a_fresh_enrollment(
    runner: NodeRunner, fake: FakeClient, tmp_path: Any
) -> None:
    (tmp_path / "node1").mkdir()
    (tmp_path / "node1" / "token").write_text("stale")

    runner.ensure_registered()

    assert (tmp_path / "node1" / "token").read_text() == fake.tokens["1"] != "stale"
    assert runner.registered


def test_a_taken_node_id_without_a_valid_token_is_fatal(
    runner: NodeRunner, fake: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.tokens["1"] = "someone-else"
    with caplog.at_level(logging.ERROR, logger="fedsite.node"), pytest.raises(RegistrationError, match="already"):
        runner.ensure_registered()
    assert "already registered" in caplog.text


def test_an_unreachable_server_means_backoff_logged_once(
    runner: NodeRunner, fake: FakeClient, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    fake.down = 7
    with caplog.at_level(logging.INFO, logger="fedsite.node"):
        results = [runner.step() for _ in range(8)]

    assert results == [False] * 7 + [True]
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert caplog.text.count("server unavailable") == 1
    assert caplog.text.count("server is back") == 1


def test_run_registers_then_returns_when_the_run_is_finished(
    fake: FakeClient, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake.info = round_info(number=4, status="closed", version=2, run="finished")
    fake.down = 1  # registration has to be retried once
    runner = NodeRunner("1", fake, tmp_path, min_poll_interval=0.0, sleep=lambda s: None)
    stop = threading.Event()

    with caplog.at_level(logging.INFO, logger="fedsite.node"):
        worker = threading.Thread(target=runner.run, args=(stop,))
        worker.start()
        worker.join(10)

    assert not worker.is_alive()
    final_sha = sha256_hex(fake.models[2])
    assert f"run finished: final model version=2 sha256={final_sha}" in caplog.text
    snapshot = runner.status_snapshot()
    assert (snapshot["model_version"], snapshot["model_sha256"], snapshot["state"]) == (2, final_sha, "finished")
    assert fake.done == 1, "a node that leaves because its run ended tells the server it is done"


def test_run_stops_when_the_stop_event_is_set(fake: FakeClient, tmp_path: Any) -> None:
    stop = threading.Event()
    fake.info = round_info(status="aggregating")
    runner = NodeRunner("1", fake, tmp_path, min_poll_interval=0.01)
    worker = threading.Thread(target=runner.run, args=(stop,))
    worker.start()
    stop.set()
    worker.join(10)
    assert not worker.is_alive()


def test_node_seeds_are_stable_and_differ_between_nodes() -> None:
    assert default_seed("3") == 3
    assert default_seed("edge-a") == default_seed("edge-a") != default_seed("edge-b")


def test_a_paused_run_makes_the_node_wait_not_finish_and_train_on_after_the_resume(
    runner: NodeRunner, fake: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.info = round_info(number=1, status="failed", run="paused")
    fake.info["run"]["finish_reason"] = "paused by op in the admin"

    with caplog.at_level(logging.INFO, logger="fedsite.node"):
        steps = [runner.step(), runner.step()]

    assert steps == [False, False] and fake.uploads == [] and not runner.finished
    assert runner.status_snapshot()["state"] == "paused"
    assert caplog.text.count("paused by op in the admin; waiting for it to resume") == 1  # said once
    assert fake.polls[-1] == (25.0, 1)  # the next poll waits on the paused round
    fake.info = round_info(number=2, version=1)
    assert runner.step() is True and [number for number, _ in fake.uploads] == [2]


def test_a_node_with_a_partition_of_a_data_set_describes_it_when_it_registers(fake: FakeClient, tmp_path: Any) -> None:
    from aggregation.datasets import node_data_load

    data = node_data_load("iris", partitioning="dirichlet:0.5", num_partitions=3, partition_id=1, seed=0)
    runner = NodeRunner("n2", fake, tmp_path, data=data, min_poll_interval=0.0, sleep=lambda s: None)

    runner.ensure_registered()

    assert fake.registered_data == [{"data": "iris", "partition": "dirichlet:0.5", "part": "1/3",
                                     "train_rows": len(data.y_train), "validation_rows": len(data.y_val)}]


def test_a_node_that_keeps_serving_reports_done_once_per_finished_run(fake: FakeClient, tmp_path: Any) -> None:
    runner = NodeRunner("1", fake, tmp_path, keep_serving=True, min_poll_interval=0.0, sleep=lambda s: None)
    runner.ensure_registered()
    fake.info = round_info(number=4, status="closed", version=2, run="finished")

    runner.step()
    runner.step()  # still finished: nothing new to report
    assert fake.done == 1
    # The report of the next run's end cannot reach the server: the node carries on regardless.
    fake.done_error = ServerUnavailable("POST /api/nodes/done: ConnectionError")
    fake.info = round_info(number=5, status="closed", version=1, run="stopped")
    runner.step()

    assert fake.done == 1 and runner.finished and runner.state == "finished"
