"""The scaled mode for real: PostgreSQL, a throw-away Redis, Celery worker processes, two web
processes, and the faults the issue names (killed worker, killed server, Redis down, racing uploads)."""
import json
import signal
import sys
import threading
import time

import numpy as np
import pytest
import requests
from websockets.sync.client import connect

from aggregation.fl.aggregate import weighted_average
from tests.e2e.conftest import Proc, free_port, wait_until
from tests.e2e.httpnode import HttpNode, model, rounds

pytestmark = pytest.mark.e2e


def _closed(url: str, number: int) -> bool:
    return any(r["number"] == number and r["status"] == "closed" for r in rounds(url))


def _assert_fedavg(url: str, version: int, seeds_and_examples: list[tuple[int, int]]) -> None:
    expected = weighted_average([(HttpNode.params(seed), n) for seed, n in seeds_and_examples])
    for got, want in zip(model(url, version), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_celery_worker_on_redis_aggregates_and_opens_the_next_round(scaled_env, start_server, start_worker):
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="3")
    worker = start_worker(scaled_env)
    nodes = [HttpNode(url, f"n{i}") for i in range(3)]

    codes = [node.upload(url, 1, 10 + i, 10 * (i + 1)).status_code for i, node in enumerate(nodes)]

    assert codes == [201, 201, 201]
    wait_until(lambda: _closed(url, 1), 60, "the worker to aggregate round 1", [server, worker])
    assert [(r["number"], r["status"]) for r in rounds(url)] == [(1, "closed"), (2, "open")]
    assert "round_aggregate" in worker.output()
    _assert_fedavg(url, 1, [(10, 10), (11, 20), (12, 30)])


def test_a_worker_killed_mid_aggregation_is_redelivered_and_aggregates_once(scaled_env, start_server, start_worker):
    # The sweeper is kept out of it (long retry): the recovery seen here is the broker's redelivery.
    scaled_env.update({"FL_VISIBILITY_TIMEOUT_S": "5", "FL_AGGREGATION_RETRY_S": "600", "SLOW_AGGREGATION_S": "60"})
    url, server = start_server(TOTAL_NODES="2", FL_MIN_NODES="2")
    slow = start_worker(scaled_env, app="tests.e2e.slow_celery", name="slow")
    nodes = [HttpNode(url, f"n{i}") for i in range(2)]
    for i, node in enumerate(nodes):
        assert node.upload(url, 1, i, 5).status_code == 201
    wait_until(lambda: "holding the aggregation" in slow.output(), 30, "the task to start", [server, slow])

    slow.stop(signal.SIGKILL)
    assert [r["status"] for r in rounds(url)] == ["aggregating"]
    worker = start_worker(scaled_env)
    wait_until(lambda: _closed(url, 1), 90, "the redelivered task to aggregate", [server, worker])

    versions = [requests.get(f"{url}/api/models/{v}", timeout=5).status_code for v in (1, 2)]
    assert versions == [200, 404]  # exactly one new model version
    assert [r["status"] for r in rounds(url)] == ["closed", "open"]
    _assert_fedavg(url, 1, [(0, 5), (1, 5)])


def test_a_server_killed_mid_round_keeps_its_updates_and_the_round_completes(scaled_env, start_server,
                                                                             start_worker, tmp_path):
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="3")
    worker = start_worker(scaled_env)
    nodes = [HttpNode(url, f"n{i}") for i in range(3)]
    for i, node in enumerate(nodes[:2]):
        assert node.upload(url, 1, 20 + i, 7 + i).status_code == 201

    server.stop(signal.SIGKILL)
    port = free_port()
    again = Proc("server-restarted", [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                 {**scaled_env, "TOTAL_NODES": "3", "FL_MIN_NODES": "3"}, tmp_path)
    url2 = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url2), 60, "the restarted server", [again])
        progress = requests.get(f"{url2}/api/rounds/current", timeout=5).json()["progress"]
        assert progress["received"] == 2 and progress["nodes"] == ["n0", "n1"]

        assert nodes[2].upload(url2, 1, 22, 9).status_code == 201
        wait_until(lambda: _closed(url2, 1), 60, "round 1 to close", [again, worker])
        _assert_fedavg(url2, 1, [(20, 7), (21, 8), (22, 9)])
    finally:
        again.stop()


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/status", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_redis_down_when_the_last_update_arrives_loses_nothing(scaled_env, start_server, start_worker,
                                                                redis_server):
    scaled_env["FL_SWEEP_INTERVAL_S"] = "1"
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="3")
    worker = start_worker(scaled_env, "-B")  # with the beat: the sweeper
    nodes = [HttpNode(url, f"n{i}") for i in range(3)]
    for i, node in enumerate(nodes[:2]):
        assert node.upload(url, 1, 30 + i, 10).status_code == 201

    redis_server.stop()
    last = nodes[2].upload(url, 1, 32, 10)
    assert last.status_code == 201, last.text
    assert [r["status"] for r in rounds(url)] == ["aggregating"]
    redis_server.start()

    wait_until(lambda: _closed(url, 1), 90, "the sweeper to aggregate after Redis returned", [server, worker])
    _assert_fedavg(url, 1, [(30, 10), (31, 10), (32, 10)])
    assert "could not enqueue" in server.output()


def test_twenty_racing_uploads_to_two_web_processes_aggregate_exactly_once(scaled_env, start_server, start_worker):
    url_a, server_a = start_server(TOTAL_NODES="20", FL_MIN_NODES="20")
    url_b, server_b = start_server(TOTAL_NODES="20", FL_MIN_NODES="20")
    worker = start_worker(scaled_env)
    nodes = [HttpNode(url_a, f"n{i:02d}") for i in range(20)]
    barrier = threading.Barrier(20)
    codes: dict[str, int] = {}

    def send(i: int, node: HttpNode) -> None:
        barrier.wait()
        codes[node.node_id] = node.upload(url_a if i % 2 else url_b, 1, i, 1 + i).status_code

    threads = [threading.Thread(target=send, args=(i, n)) for i, n in enumerate(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(codes.values()) == [201] * 20
    wait_until(lambda: _closed(url_a, 1), 60, "round 1 to close", [server_a, server_b, worker])
    assert [(r["number"], r["status"], r["updates"]) for r in rounds(url_b)] == [(1, "closed", 20), (2, "open", 0)]
    assert requests.get(f"{url_a}/api/models/2", timeout=5).status_code == 404
    assert worker.output().count("succeeded") >= 1
    _assert_fedavg(url_a, 1, [(i, 1 + i) for i in range(20)])


def test_a_websocket_on_one_web_process_sees_events_caused_through_another(scaled_env, start_server, start_worker):
    url_a, server_a = start_server(TOTAL_NODES="2", FL_MIN_NODES="2")
    url_b, server_b = start_server(TOTAL_NODES="2", FL_MIN_NODES="2")
    start_worker(scaled_env)
    nodes = [HttpNode(url_b, f"n{i}") for i in range(2)]
    ws_url = url_a.replace("http://", "ws://") + "/ws/dashboard/"

    with connect(ws_url, origin=url_a, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["event"] == "snapshot"
        # Idle longer than redis-py 8's 5 s socket timeout, which used to drop idle websockets.
        time.sleep(6.5)
        for i, node in enumerate(nodes):
            assert node.upload(url_b, 1, i, 3).status_code == 201
        seen = []
        deadline = time.monotonic() + 30
        while "round.closed" not in seen and time.monotonic() < deadline:
            seen.append(json.loads(socket.recv(timeout=30))["event"])

    assert seen.count("update.received") == 2
    assert "round.closed" in seen  # sent by the worker process, delivered through Redis


def test_a_killed_node_is_covered_by_the_quorum_and_rejoins_as_itself(scaled_env, start_server, start_worker,
                                                                      start_node):
    scaled_env["FL_SWEEP_INTERVAL_S"] = "0.5"
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="2", FL_ROUND_TIMEOUT_S="3")
    worker = start_worker(scaled_env, "-B")
    nodes = {n: start_node(n, url) for n in ("1", "2", "3")}
    procs = [server, worker, *nodes.values()]
    # Any round, not round 1: on a loaded machine the third node may start after round 1's 3 s deadline.
    wait_until(lambda: any(r["status"] == "closed" and r["updates"] == 3 for r in rounds(url)), 60,
               "a round with all three nodes", procs)

    nodes["3"].stop(signal.SIGKILL)
    killed_at = max(r["number"] for r in rounds(url))
    wait_until(lambda: any(r["number"] > killed_at and r["status"] == "closed" and r["updates"] == 2
                           for r in rounds(url)), 60, "a round closed at its deadline by the quorum of two", procs)
    back = start_node("3", url)
    wait_until(lambda: "stored token accepted" in back.output(), 30, "node 3 to come back", [*procs, back])
    last_before = max(r["number"] for r in rounds(url))
    wait_until(lambda: any(r["number"] > last_before and r["status"] == "closed" and r["updates"] == 3
                           for r in rounds(url)), 60, "a round with node 3 again", [*procs, back])

    node_ids = sorted(n["node_id"] for n in requests.get(f"{url}/api/nodes", timeout=5).json())
    assert node_ids == ["1", "2", "3"]
