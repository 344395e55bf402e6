"""etcd discovery with real processes: a real etcd, a server, `watchnodes` and `runnode` nodes."""
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import Proc, free_port, wait_until
from tests.integration.test_discovery_etcd import EtcdServer

pytestmark = pytest.mark.e2e
TTL = "2"  # etcd's minimum, so the expiry tests stay short
# Short long-polls: a server stopping at teardown waits for the long-polls it is holding.
POLL = ("--poll-wait", "2")
NODE_KEY = "/fedlearn/nodes/{}"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path).start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def start_watcher(e2e_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """`manage.py watchnodes` on the server's database (same env as the server it watches for)."""
    procs: list[Proc] = []

    def start(*extra: str, **overrides: str) -> Proc:
        proc = Proc(f"watchnodes-{len(procs)}", [sys.executable, "manage.py", "watchnodes", *extra],
                    {**e2e_env, **overrides}, tmp_path)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def _nodes(url: str) -> dict[str, dict]:
    return {n["node_id"]: n for n in requests.get(f"{url}/api/nodes", timeout=5).json()}


def _finished(url: str) -> bool:
    try:
        return requests.get(f"{url}/status", timeout=5).json().get("run_status") == "finished"
    except requests.RequestException:
        return False


def test_a_node_keeps_its_lease_past_three_ttls_and_once_sigkilled_its_key_expires_and_it_turns_offline(
        etcd, start_server, start_node, start_watcher):
    env = {"ETCD_ENDPOINTS": etcd.endpoint, "FL_ETCD_TTL_S": TTL}
    # The scaled mode's layout: the web process leaves etcd to its own `watchnodes` process.
    url, server = start_server(TOTAL_NODES="3")
    watcher = start_watcher(**env)
    node = start_node("1", url, *POLL, **env)
    procs = [server, watcher, node]
    key = NODE_KEY.format("1")

    wait_until(lambda: key in etcd.entries(key), 30, "the node's key in etcd", procs)
    address, lease = etcd.entries(key)[key]
    granted = etcd.ctl("lease", "timetolive", f"{lease:x}")
    wait_until(lambda: "node 1 is alive in etcd" in watcher.output(), 15, "the watcher to see the node", procs)
    leases = set()
    for _ in range(int(3.5 * float(TTL) / 0.25)):  # the key must stay, on the same lease, for 3.5 TTLs
        leases.add(etcd.entries(key).get(key, ("", 0))[1])
        time.sleep(0.25)

    before = _nodes(url)["1"]

    # Its last contact is seconds old, so only the expired lease can make the server call it offline.
    node.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: key not in etcd.entries(key), 2 * float(TTL) + 2, "the key to expire", procs)
    expired = time.monotonic() - killed
    wait_until(lambda: _nodes(url)["1"]["status"] == "offline", 10, "the server to mark the node offline", procs)
    offline = time.monotonic() - killed

    assert (before["status"], before["address"]) == ("online", address) and address.startswith("http://127.0.0.1:")
    assert lease != 0 and f"granted with TTL({TTL}s)" in granted
    assert leases == {lease}
    assert "node 1 left etcd" in watcher.output()
    print(f"after SIGKILL: key gone in {expired:.2f}s, node offline on the server in {offline:.2f}s (TTL {TTL}s)")


def test_the_embedded_server_registers_itself_and_mirrors_the_nodes(etcd, start_server, start_node):
    env = {"ETCD_ENDPOINTS": etcd.endpoint, "FL_ETCD_TTL_S": TTL}
    port = free_port()
    url, server = start_server(TOTAL_NODES="3", FL_PUBLIC_URL=f"http://127.0.0.1:{port}", **env)
    node = start_node("1", url, *POLL, **env)

    wait_until(lambda: _nodes(url).get("1", {}).get("status") == "online" and "node 1 is alive in etcd"
               in server.output(), 30, "the web process to see the node in etcd", [server, node])
    node.stop(signal.SIGTERM)
    wait_until(lambda: _nodes(url)["1"]["status"] == "offline", 15, "the node to turn offline", [server, node])

    value, lease = etcd.entries("/fedlearn/server")["/fedlearn/server"]
    assert value == f"http://127.0.0.1:{port}" and lease != 0


def test_a_node_registers_again_by_itself_after_etcd_restarts(etcd, start_server, start_node):
    env = {"ETCD_ENDPOINTS": etcd.endpoint, "FL_ETCD_TTL_S": TTL}
    url, server = start_server(TOTAL_NODES="3", **env)
    node = start_node("1", url, *POLL, **env)
    key = NODE_KEY.format("1")
    wait_until(lambda: key in etcd.entries(key), 30, "the node's key in etcd", [server, node])
    first = etcd.entries(key)[key]

    etcd.stop(signal.SIGKILL)
    etcd.start(wipe=True)  # its data lost as well: only the node itself can put the key back
    restarted = time.monotonic()
    wait_until(lambda: key in etcd.entries(key), 15, "the node to register again", [server, node])
    back = time.monotonic() - restarted

    again = etcd.entries(key)[key]
    assert again[0] == first[0] and again[1] not in (0, first[1])
    assert node.output().count("etcd unreachable") == 1 and "etcd reachable again" in node.output()
    print(f"node back in etcd {back:.2f}s after etcd restarted")


def test_a_node_without_a_server_address_finds_the_server_in_etcd_and_completes_a_round(
        etcd, start_server, start_watcher, e2e_env, tmp_path):
    env = {"ETCD_ENDPOINTS": etcd.endpoint, "FL_ETCD_TTL_S": TTL}
    url, server = start_server(TOTAL_NODES="1", FL_MIN_NODES="1", FL_MAX_ROUNDS="1")
    watcher = start_watcher("--public-url", url, **env)
    node_env = {k: v for k, v in {**e2e_env, **env}.items() if k != "SERVER_ADDR"}
    node_env["FL_NODE_STATE_DIR"] = str(tmp_path / "node-1")
    # Built by hand: the start_node fixture always passes --server.
    args = [sys.executable, "manage.py", "runnode", "--id", "1", "--port", "0", *POLL]
    node = Proc("node-1", args, node_env, tmp_path)
    procs = [server, watcher, node]
    try:
        wait_until(lambda: node.popen.poll() is not None, 60, "the node to finish the run", procs)
    finally:
        node.stop()

    rounds = requests.get(f"{url}/api/rounds", timeout=5).json()["rounds"]
    assert node.popen.returncode == 0, node.output()[-3000:]
    assert f"server found at {url}" in node.output()
    assert [(r["number"], r["status"], r["updates"]) for r in rounds] == [(1, "closed", 1)]
    assert etcd.entries(NODE_KEY.format("1")) == {}  # a clean exit revokes the lease at once


def test_a_federation_completes_its_rounds_with_etcd_unreachable(start_server, start_node, start_watcher):
    env = {"ETCD_ENDPOINTS": f"127.0.0.1:{free_port()}", "FL_ETCD_TTL_S": TTL}  # nothing listens there
    url, server = start_server(TOTAL_NODES="2", FL_MIN_NODES="2", FL_MAX_ROUNDS="2", **env)
    watcher = start_watcher(**env)
    # --keep-serving: a node can finish two quick rounds before its first try at etcd; kept up after
    # the run, each gets to it, and must say so once.
    nodes = [start_node(n, url, *POLL, "--keep-serving", **env) for n in ("1", "2")]
    procs = [server, watcher, *nodes]

    wait_until(lambda: _finished(url), 90, "two rounds with etcd down", procs)
    wait_until(lambda: all("run finished" in p.output() and "etcd unreachable" in p.output() for p in nodes), 30,
               "each node to finish its run and find etcd down", procs)
    assert [p.stop() for p in nodes] == [0, 0]

    rounds = requests.get(f"{url}/api/rounds", timeout=5).json()["rounds"]
    assert [(r["status"], r["updates"]) for r in rounds] == [("closed", 2), ("closed", 2)]
    for proc in (*nodes, watcher, server):
        # Said once, clearly, and no traceback for each retry.
        assert proc.output().count("etcd unreachable") == 1, proc.output()[-3000:]
        assert "Traceback" not in proc.output()
