"""etcd discovery against a real etcd on free loopback ports: leases, keep-alive, re-registration,
fail-over, the prefix watch and its resync. Also holds the EtcdServer helper the e2e tests use."""
import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nodes_app import discovery
from tests.e2e.conftest import free_port, wait_until

TTL = 2  # etcd's minimum


def require_binary(name: str) -> str:
    """The path of `name`; a missing binary fails under CI and skips on a developer machine."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install -y etcd-server etcd-client)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI=true: a test that needs a service must not be skipped")
        pytest.skip(reason)
    return path


class EtcdServer:
    """A single-member etcd on free loopback ports with a throw-away data dir; restartable."""

    def __init__(self, tmp_path: Path) -> None:
        self.binary, self.ctl_binary = require_binary("etcd"), require_binary("etcdctl")
        self.port, self.peer_port = free_port(), free_port()
        self.dir = tmp_path / f"etcd-{self.port}"
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, *, wipe: bool = False) -> "EtcdServer":
        if wipe:
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        self.dir.mkdir(exist_ok=True)
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        with (self.dir / "etcd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--name", "test", "--data-dir", str(self.dir / "data"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"test={peer}", "--initial-cluster-state", "new",
                 "--logger", "zap", "--log-outputs", "stderr"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(self.healthy, 30, f"etcd on {self.endpoint} to be healthy")
        return self

    def healthy(self) -> bool:
        try:
            return requests.get(f"http://{self.endpoint}/health", timeout=1).json().get("health") == "true"
        except (requests.RequestException, ValueError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def ctl(self, *args: str) -> str:
        done = subprocess.run([self.ctl_binary, f"--endpoints={self.endpoint}", *args], capture_output=True,
                              text=True, timeout=10, env={**os.environ, "ETCDCTL_API": "3"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    def entries(self, prefix: str) -> dict[str, tuple[str, int]]:
        """key -> (value, lease id) under `prefix`, as etcdctl sees them."""
        answer = json.loads(self.ctl("get", "--prefix", prefix, "-w", "json"))
        return {_b64(kv["key"]): (_b64(kv["value"]), kv.get("lease", 0)) for kv in answer.get("kvs", [])}


def _b64(text: str) -> str:
    return base64.b64decode(text).decode()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path).start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def key() -> str:
    return f"/fedsite-test/{uuid.uuid4().hex[:8]}/node"


def endpoints(*servers: str) -> list[discovery.Endpoint]:
    return discovery.endpoints_parse(",".join(servers))


async def until(predicate, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_endpoints_parse_accepts_host_port_lists_urls_and_default_ports():
    parsed = discovery.endpoints_parse(" 10.0.0.1:2379, http://etcd-b:23790 ,etcd-c,[::1]:2380,")

    assert [str(e) for e in parsed] == ["10.0.0.1:2379", "etcd-b:23790", "etcd-c:2379", "[::1]:2380"]
    assert discovery.endpoints_parse("") == []


@pytest.mark.parametrize("value", ["https://etcd:2379", "etcd:notaport", "etcd:2379/v3"])
def test_endpoints_parse_rejects_what_it_cannot_connect_to(value):
    with pytest.raises(ValueError):
        discovery.endpoints_parse(value)


def test_the_discovery_module_does_not_import_django():
    script = "import sys, nodes_app.discovery; print('django' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


async def test_a_registration_puts_the_url_on_a_lease_and_revokes_it_on_a_clean_stop(etcd, key):
    # Keeping the lease past 3 TTLs and its expiry after SIGKILL are in tests/e2e/test_etcd.py.
    stop = asyncio.Event()
    task = asyncio.create_task(discovery.lease_keep(endpoints(etcd.endpoint), key, "http://127.0.0.1:8002", TTL, stop))
    await until(lambda: key in etcd.entries(key), 10, "the key")
    value, lease = etcd.entries(key)[key]
    granted = etcd.ctl("lease", "timetolive", f"{lease:x}")

    stop.set()
    await asyncio.wait_for(task, 10)

    assert value == "http://127.0.0.1:8002" and lease != 0 and f"granted with TTL({TTL}s)" in granted
    assert etcd.entries(key) == {}  # revoked at once on a clean stop, not a TTL later


async def test_a_registration_comes_back_by_itself_after_etcd_restarts_with_its_data_lost(etcd, key):
    stop = asyncio.Event()
    task = asyncio.create_task(discovery.lease_keep(endpoints(etcd.endpoint), key, "http://n:1", TTL, stop))
    await until(lambda: key in etcd.entries(key), 10, "the first registration")
    first_lease = etcd.entries(key)[key][1]

    etcd.stop(signal.SIGKILL)
    etcd.start(wipe=True)  # a rebuilt cluster: neither the key nor the lease exist any more
    await until(lambda: key in etcd.entries(key), 15, "the node to register again")
    again = etcd.entries(key)[key]
    stop.set()
    await asyncio.wait_for(task, 10)

    assert again[0] == "http://n:1" and again[1] not in (0, first_lease)


async def test_a_registration_puts_its_key_back_when_someone_deletes_it(etcd, key):
    stop = asyncio.Event()
    task = asyncio.create_task(discovery.lease_keep(endpoints(etcd.endpoint), key, "http://n:1", TTL, stop))
    await until(lambda: key in etcd.entries(key), 10, "the key")

    etcd.ctl("del", key)
    await until(lambda: key in etcd.entries(key), 5, "the key to come back")
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_registration_fails_over_to_the_next_endpoint(etcd, key):
    dead = f"127.0.0.1:{free_port()}"
    stop = asyncio.Event()

    task = asyncio.create_task(discovery.lease_keep(endpoints(dead, etcd.endpoint), key, "http://n:1", TTL, stop))
    await until(lambda: key in etcd.entries(key), 10, "the key through the second endpoint")
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_unreachable_etcd_is_logged_once_and_its_return_once(tmp_path, key, caplog):
    server = EtcdServer(tmp_path)  # not started yet: the port refuses connections
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="fedsite.discovery")
    try:
        task = asyncio.create_task(discovery.lease_keep(endpoints(server.endpoint), key, "http://n:1", TTL, stop))
        await asyncio.sleep(1.6)  # a few retries (0.5 s, then 1 s apart)
        server.start()
        await until(lambda: key in server.entries(key), 15, "the registration after etcd came up")
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        server.stop(signal.SIGKILL)

    messages = [r.getMessage() for r in caplog.records if r.name == "fedsite.discovery"]
    assert len([m for m in messages if m.startswith("etcd unreachable")]) == 1
    assert len([m for m in messages if m.startswith("etcd reachable again")]) == 1
    assert not [r for r in caplog.records if r.exc_info]


async def test_the_prefix_watch_syncs_then_reports_puts_and_deletes_and_resyncs_after_a_restart(etcd, key):
    prefix = key + "s/"
    etcd.ctl("put", prefix + "a", "http://a:1")
    syncs: list[dict[str, str]] = []
    changes: list[tuple[str, str | None]] = []

    async def on_sync(items: dict[str, str]) -> None:
        syncs.append(items)

    async def on_change(name: str, value: str | None) -> None:
        changes.append((name, value))

    stop = asyncio.Event()
    task = asyncio.create_task(discovery.prefix_watch(endpoints(etcd.endpoint), prefix, stop, on_sync=on_sync,
                                                      on_change=on_change))
    await until(lambda: syncs, 10, "the first sync")
    etcd.ctl("put", prefix + "b", "http://b:1")
    etcd.ctl("del", prefix + "a")
    await until(lambda: len(changes) == 2, 10, "two changes")
    # While the watcher is cut off, b goes away and c arrives: the resync must show exactly that.
    etcd.stop(signal.SIGKILL)
    etcd.start(wipe=True)
    etcd.ctl("put", prefix + "c", "http://c:1")
    await until(lambda: len(syncs) >= 2 and "c" in syncs[-1], 15, "a resync after the restart")
    stop.set()
    await asyncio.wait_for(task, 10)

    assert syncs[0] == {"a": "http://a:1"}
    assert changes == [("b", "http://b:1"), ("a", None)]
    assert syncs[-1] == {"c": "http://c:1"}


async def test_a_node_follows_the_server_url_from_etcd(etcd):
    urls: list[str] = []
    follower = discovery.ServerFollower(urls.append)
    etcd.ctl("put", discovery.SERVER_KEY, "http://server-a:5000/")
    stop = asyncio.Event()
    task = asyncio.create_task(follower.job(endpoints(etcd.endpoint))(stop))

    await until(lambda: follower.found.is_set(), 10, "the server URL")
    etcd.ctl("put", discovery.SERVER_KEY, "javascript:alert(1)")
    etcd.ctl("put", discovery.SERVER_KEY, "http://server-b:5000")
    await until(lambda: len(urls) == 2, 10, "the move")
    stop.set()
    await asyncio.wait_for(task, 10)

    assert urls == ["http://server-a:5000", "http://server-b:5000"]
