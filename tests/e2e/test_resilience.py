"""Deadlines in the embedded mode, nodes that start first, a server restart, and RUN_AS."""
import signal
import sys

import pytest
import requests

from tests.e2e.conftest import ROOT, Proc, free_port, wait_until

pytestmark = pytest.mark.e2e


def _rounds(url: str) -> list[dict]:
    return requests.get(f"{url}/api/rounds", timeout=5).json()["rounds"]


def _finished(url: str) -> bool:
    try:
        return requests.get(f"{url}/status", timeout=5).json().get("run_status") == "finished"
    except requests.RequestException:
        return False


def test_a_round_closes_at_its_deadline_with_the_quorum(start_server, start_node):
    # Three nodes are expected but only two come: the embedded sweeper thread closes each round
    # at its deadline because the quorum of two is met. `extend`: on a loaded machine one node can
    # start more than a deadline after the other, and a round below quorum must then wait for it
    # rather than fail (the failing case has its own test below).
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="2", FL_ROUND_TIMEOUT_S="2", FL_MAX_ROUNDS="2",
                               FL_ON_TIMEOUT="extend")
    nodes = [start_node(n, url) for n in ("1", "2")]

    wait_until(lambda: _finished(url), 90, "two rounds closed by deadline", [server, *nodes])

    rounds = _rounds(url)
    assert [(r["number"], r["status"], r["updates"]) for r in rounds] == [(1, "closed", 2), (2, "closed", 2)]


def test_a_round_below_quorum_fails_at_its_deadline_and_a_new_one_opens(start_server, start_node):
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="2", FL_ROUND_TIMEOUT_S="1.5")
    node = start_node("1", url)

    wait_until(lambda: len(_rounds(url)) >= 3, 60, "two failed rounds", [server, node])

    rounds = _rounds(url)
    assert [r["status"] for r in rounds[:2]] == ["failed", "failed"]
    assert all(r["base_version"] == 0 for r in rounds)
    assert "1 of the 2" in rounds[0]["failure_reason"]


def test_nodes_started_before_the_server_wait_for_it(start_server, start_node, e2e_env, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    nodes = [start_node(n, url) for n in ("1", "2", "3")]
    wait_until(lambda: all("unavailable" in p.output() for p in nodes), 30, "nodes to notice the server is down",
               nodes)

    # The server comes up on the port the nodes were told about.
    env = {**e2e_env, "TOTAL_NODES": "3", "FL_MIN_NODES": "3", "FL_MAX_ROUNDS": "2"}
    import subprocess

    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    server = Proc("late-server", [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                  env, tmp_path)
    try:
        wait_until(lambda: _finished(url), 90, "the run to finish", [server, *nodes])
        assert [r["status"] for r in _rounds(url)] == ["closed", "closed"]
    finally:
        server.stop()


def test_a_restarted_server_keeps_its_state_and_nodes_keep_their_identity(start_server, start_node, e2e_env,
                                                                          tmp_path):
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="3", FL_MAX_ROUNDS="4")
    nodes = [start_node(n, url) for n in ("1", "2", "3")]
    wait_until(lambda: len([r for r in _rounds(url) if r["status"] == "closed"]) >= 1, 60, "a first round",
               [server, *nodes])

    server.stop(signal.SIGKILL)
    port = url.rsplit(":", 1)[1]
    env = {**e2e_env, "TOTAL_NODES": "3", "FL_MIN_NODES": "3", "FL_MAX_ROUNDS": "4"}
    again = Proc("server-again", [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                 env, tmp_path)
    try:
        wait_until(lambda: _finished(url), 120, "the run to finish after the restart", [again, *nodes])
        rounds = _rounds(url)
        assert [r["status"] for r in rounds] == ["closed"] * 4
        node_list = requests.get(f"{url}/api/nodes", timeout=5).json()
        assert sorted(n["node_id"] for n in node_list) == ["1", "2", "3"]
        assert all("enrolled afresh" not in p.output() and "enrolling afresh" not in p.output() for p in nodes)
    finally:
        again.stop()


def test_python_m_fedsite_starts_the_role_named_by_run_as(e2e_env, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = {**e2e_env, "TOTAL_NODES": "1", "FL_MIN_NODES": "1", "FL_MAX_ROUNDS": "1"}
    server = Proc("run-as-server", [sys.executable, "-m", "fedsite"],
                  {**common, "RUN_AS": "server", "FL_BIND": f"127.0.0.1:{port}"}, tmp_path)
    node = Proc("run-as-node", [sys.executable, "-m", "fedsite", "--port", "0"],
                {**common, "RUN_AS": "node", "NODE_ID": "1", "SERVER_ADDR": url,
                 "FL_NODE_STATE_DIR": str(tmp_path / "n1")}, tmp_path)
    try:
        wait_until(lambda: _finished(url), 90, "a one-round run", [server, node])
        assert node.popen.wait(30) == 0
        assert "run finished: final model version=1" in node.output()
    finally:
        node.stop()
        server.stop()
