"""ClientNode, the node loop around a user's client, driven step by step against an in-memory server."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregation.fl.serde import loads, params_dumps, params_loads, sha256_hex
from fedsite_node import ClientMismatch, ClientNode, RegistrationError
from fedsite_node.http import ServerRejected
from tests.unit.test_node_adapter import SPEC, Client, NamedClient, ScoringClient, model

ROOT = Path(__file__).resolve().parents[2]


class FakeServer:
    """Stands in for ServerClient: one experiment over SPEC, rounds as the test sets them."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.models = {0: model(seed=0), 1: model(seed=1)}
        self.info = self.round(1, version=0)
        self.uploads: list[tuple[int, bytes]] = []
        self.initial: list[bytes] = []
        self.evaluations: list[tuple] = []
        self.failures: list[tuple[int, str]] = []
        self.initial_error: ServerRejected | None = None
        self.done = 0

    @staticmethod
    def round(number: int, version: int, run: str = "running") -> dict[str, Any]:
        return {"number": number, "status": "open", "model_version": version, "config": {"epochs": 1},
                "progress": {"nodes": []}, "run": {"status": run, "model_version": version},
                "model_spec": {"kind": "tensors", "tensors": []} if version is None else SPEC.to_dict()}

    def register(self, node_id, address, enrollment_token=None, data=None):
        return {"node_id": node_id, "token": "t"}

    def current_round(self, wait=0.0, known=None):
        return copy.deepcopy(self.info)

    def download_model(self, version):
        body = params_dumps(SPEC, self.models[version])
        return body, sha256_hex(body)

    def upload_update(self, number, body):
        self.uploads.append((number, body))
        return 201, {"status": "accepted"}

    def upload_initial(self, body):
        if self.initial_error:
            raise self.initial_error
        self.initial.append(body)
        return {"sha256": sha256_hex(body)}

    def report_failure(self, number, reason):
        self.failures.append((number, reason))

    def report_evaluation(self, version, loss, num_examples, metrics):
        self.evaluations.append((version, loss, num_examples, metrics))
        return 201, {"evaluation": {"loss": loss}}

    def report_done(self):
        self.done += 1
        return {"status": "done"}


def node(tmp_path, client) -> tuple[ClientNode, FakeServer]:
    server = FakeServer()
    return ClientNode("n1", server, tmp_path, client, min_poll_interval=0.0, sleep=lambda s: None), server


def test_client_node_uploads_fit_results_in_manifest_order_and_scores_the_rounds_model(tmp_path):
    # Prepare
    client = ScoringClient([2, 0, 3, 1])
    loop, server = node(tmp_path, client)

    # Execute: round 1 on version 0, then round 2 on version 1
    first = loop.step()
    server.info = server.round(2, version=1)
    second, third = loop.step(), loop.step()

    # Assert
    assert (first, second, third) == (True, True, False)
    assert [n for n, _ in server.uploads] == [1, 2]
    params, meta = params_loads(SPEC, server.uploads[1][1])
    for i, j in enumerate(client.order):
        np.testing.assert_array_equal(params[j], server.models[1][j] * 2 + i)
    assert meta["num_examples"] == "7" and meta["base_version"] == "1" and json.loads(meta["metrics"]) == {"loss": 0.5}
    assert server.evaluations == [(0, 0.25, 20, {"accuracy": 0.75}), (1, 0.25, 20, {"accuracy": 0.75})]


def test_client_node_offers_its_parameters_while_the_experiment_initializes(tmp_path):
    loop, server = node(tmp_path, NamedClient([1, 3, 0, 2]))
    server.info = server.round(0, version=None, run="initializing")

    assert loop.step() is True

    tensors, _ = loads(server.initial[0])
    assert list(tensors) == ["conv.bias", "fc.bias", "conv.weight", "fc.weight"]
    assert [t.shape for t in tensors.values()] == [(2,), (3,), (2, 1, 3, 3), (3, 8)]
    assert server.uploads == []

    # Another node was first: that is not an error, and the next round trains on its model.
    server.initial_error = ServerRejected(409, "already_initialized", "Experiment 'e' already has its model.", {})
    assert loop.step() is True
    server.info = server.round(1, version=0)
    assert loop.step() is True and [n for n, _ in server.uploads] == [1]


def test_client_node_skips_a_round_its_client_fails_and_stops_on_a_mismatch(tmp_path):
    def nan(parameters):
        return [np.full_like(p, np.nan) for p in parameters], 3, {}

    failing, server = node(tmp_path, Client([0, 1, 2, 3], fit_result=nan))
    assert failing.step() is True and server.uploads == [] and 1 in failing._done_rounds
    assert server.failures == [(1, "the parameters fit returned: tensor 'conv.weight' contains NaN or infinity")]
    assert failing.step() is False  # not retried

    mismatched, _ = node(tmp_path / "other", Client([0, 1, 2]))
    with pytest.raises(ClientMismatch, match="4 tensors but 3 were given"):
        mismatched.run()


@pytest.mark.timeout(20)  # without the guard the loop retries the unreadable spec forever
def test_client_node_finishes_when_the_run_was_stopped_before_any_node_gave_the_model(tmp_path):
    loop, server = node(tmp_path, NamedClient([0, 1, 2, 3]))
    server.info = server.round(0, version=None, run="stopped")

    loop.run()  # returns: nothing to fetch, nothing to offer

    assert loop.finished and loop.state == "finished"
    assert server.uploads == [] and server.initial == []
    assert server.done == 1


def test_the_node_sdk_imports_where_django_cannot():
    code = ("import sys; sys.modules['django'] = sys.modules['rest_framework'] = None; "
            "import fedsite_node, fedsite_node.loop, fedsite_node.__main__; print(fedsite_node.ClientNode.__name__)")

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ClientNode"


def test_a_typo_in_the_experiment_name_stops_the_node_with_the_reason(tmp_path):
    loop, server = node(tmp_path, NamedClient([0, 1, 2, 3]))

    def unknown(wait=0.0, known=None):
        raise ServerRejected(404, "unknown_experiment", "There is no experiment named 'digts'.", {})

    server.current_round = unknown

    with pytest.raises(RegistrationError, match="There is no experiment named 'digts'. Check --experiment"):
        loop.run()


def test_a_mismatch_names_the_experiment_it_did_not_fit(tmp_path):
    loop, server = node(tmp_path, Client([0, 1, 2]))

    with pytest.raises(ClientMismatch, match="does not fit the server's default experiment .choose another with "
                                             "--experiment.: the experiment's model has 4 tensors"):
        loop.run()
    server.experiment = "digits-cnn"
    loop.adapter.manifest = None
    with pytest.raises(ClientMismatch, match="does not fit experiment 'digits-cnn'"):
        loop.run()


def test_the_sdk_imports_from_any_directory_with_the_projects_venv(tmp_path):
    # `make` installs the checkout in editable mode: a user's script elsewhere needs no PYTHONPATH.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = "import fedsite_node.__main__, sys; print(fedsite_node.__file__)"

    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(ROOT / "fedsite_node" / "__init__.py")
