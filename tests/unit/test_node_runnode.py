"""The runnode command: argument defaults, a clean end of run, SIGTERM, and a node that never imports Django."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import params_dumps, sha256_hex
from nodes_app.management.commands import runnode
from nodes_app.nodeserver import NodeHTTPServer, start_node_server

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = params_dumps(MLPSpec(), init_parameters(MLPSpec(), 0))


class FakeClient:
    """Just enough of ServerClient for a node to enroll and see one round state."""

    def __init__(self, round_status: str, run_status: str) -> None:
        self.token: str | None = None
        self.tokens: dict[str, str] = {}
        self.info = {"number": 5, "status": round_status, "model_version": 2,
                     "run": {"status": run_status, "model_version": 2}}

    def register(self, node_id: str, address: str, enrollment_token: str | None = None,
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
        self.tokens[node_id] = "secret"
        return {"node_id": node_id, "token": "secret", "address": address}

    def report_done(self):
        return {"status": "done"}

    def current_round(self, wait: float = 0.0, known: int | None = None) -> dict[str, Any]:
        return self.info

    def download_model(self, version: int | str) -> tuple[bytes, str]:
        return MODEL, sha256_hex(MODEL)

    def close(self) -> None:
        pass


def parse(*argv: str) -> dict[str, Any]:
    return vars(runnode.Command().create_parser("manage.py", "runnode").parse_args(argv))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[NodeHTTPServer]:
    """Capture the node API servers the command starts, so a test can check they were shut down."""
    servers: list[NodeHTTPServer] = []

    def start(*args: Any, **kwargs: Any) -> NodeHTTPServer:
        servers.append(start_node_server(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(runnode, "start_node_server", start)
    return servers


def use_fake(monkeypatch: pytest.MonkeyPatch, fake: FakeClient) -> None:
    monkeypatch.setattr(runnode, "ServerClient", lambda url, experiment=None: fake)


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ID", "4")
    monkeypatch.setenv("SERVER_ADDR", "http://server:5000")
    monkeypatch.setenv("FL_NODE_STATE_DIR", "/tmp/node-four")

    options = parse()

    assert (options["node_id"], options["server"]) == ("4", "http://server:5000")
    assert options["state_dir"] == "/tmp/node-four"
    assert options["port"] is None and options["poll_wait"] == 25.0


def test_a_finished_run_ends_the_command_and_frees_the_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, started: list[NodeHTTPServer]
) -> None:
    fake = FakeClient("closed", "finished")
    use_fake(monkeypatch, fake)

    runnode.Command().handle(**parse("--id", "1", "--port", "0", "--state-dir", str(tmp_path)))

    assert (tmp_path / "token").read_text() == fake.tokens["1"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{started[0].url}/status", timeout=2)


def test_sigterm_stops_a_node_that_keeps_serving(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, started: list[NodeHTTPServer]
) -> None:
    fake = FakeClient("aggregating", "running")
    register = fake.register

    def register_then_signal(*args: Any, **kwargs: Any) -> dict[str, Any]:
        # Sent from the node's loop thread, once the command has installed its handlers; the check
        # turns a missing handler into a failed test instead of a killed test run.
        assert callable(signal.getsignal(signal.SIGTERM)), "runnode did not install a SIGTERM handler"
        os.kill(os.getpid(), signal.SIGTERM)
        return register(*args, **kwargs)

    fake.register = register_then_signal  # type: ignore[method-assign]
    use_fake(monkeypatch, fake)

    runnode.Command().handle(**parse("--id", "1", "--port", "0", "--state-dir", str(tmp_path), "--keep-serving"))

    assert started[0].thread is None  # shut down


def test_a_non_numeric_id_needs_an_explicit_port() -> None:
    with pytest.raises(runnode.CommandError, match="--port"):
        runnode.Command().handle(**parse("--id", "edge-a"))


def test_the_node_modules_do_not_import_django() -> None:
    script = (
        "import json, sys\n"
        "import fedsite_node.http, nodes_app.runner, nodes_app.nodeserver\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    assert [name for name in ("django", "rest_framework", "celery") if name in json.loads(done.stdout)] == []


def test_the_node_api_needs_a_token_kept_in_the_state_directory(monkeypatch, tmp_path, started) -> None:
    # Prepare: a server that finishes the run at once, so the command returns
    fake = FakeClient("closed", "finished")
    use_fake(monkeypatch, fake)

    # Execute
    runnode.Command().handle(**parse("--id", "1", "--port", "0", "--state-dir", str(tmp_path)))

    # Assert: a secret of its own, readable by the node's user only, required by the API it served
    token_file = tmp_path / "api_token"
    assert len(token_file.read_text()) >= 40 and (token_file.stat().st_mode & 0o777) == 0o600
    assert started[0].api_token == token_file.read_text()


def test_open_api_serves_the_prototypes_open_api(monkeypatch, tmp_path, started) -> None:
    use_fake(monkeypatch, FakeClient("closed", "finished"))

    runnode.Command().handle(**parse("--id", "1", "--port", "0", "--state-dir", str(tmp_path), "--open-api"))

    assert started[0].api_token is None and not (tmp_path / "api_token").exists()
