"""Shared helpers of the process benchmarks: a real server and real nodes on loopback, /proc readings,
and the raw loopback TCP baseline each benchmark measures in its own run. Not a benchmark itself."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
ENROLLMENT = "bench-enrollment"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Variables of the developer's shell that would change the mode or the experiment under test.
_DROP = ("DJANGO_", "FL_", "DATABASE_", "REDIS_", "ETCD_", "TOTAL_NODES", "SERVER_ADDR", "NODE_ID", "RUN_AS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- /proc -------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mb(pid: int, field: str) -> float:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM...) in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(field)


def peak_reset(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --- processes ---------------------------------------------------------------------------------------
class Proc:
    """A child process in its own session, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def reap(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(10)
        self._log.close()


class Fleet:
    """Every process a benchmark case starts, and its scratch directory; `with Fleet() as f:` stops them all,
    also on errors and Ctrl-C. SIGTERM to the benchmark is turned into the same clean-up."""

    def __init__(self, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fedsite-bench-"))
        self.procs: list[Proc] = []
        self.keep = keep
        self.server_env: dict[str, str] = {}

    def __enter__(self) -> Fleet:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop_all(self) -> None:
        # TERM everyone first so 100 nodes shut down in parallel, then wait for each.
        for proc in self.procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            proc.reap(max(0.5, deadline - time.monotonic()))
        self.procs.clear()

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
        env.update({
            "DJANGO_SETTINGS_MODULE": "fedsite.settings",
            "SECRET_KEY": "bench-secret-key-not-for-production",
            "DEBUG": "0",
            "FL_DATA_DIR": str(self.dir / "server"),
            "FL_ENROLLMENT_TOKEN": ENROLLMENT,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(overrides)
        return env

    def start_server(self, server: str = "runserver", **overrides: str) -> tuple[str, Proc]:
        """migrate, then `runserver --noreload` (one process: the embedded mode) on a free port.

        server="daphne" serves the same application with daphne instead, the baseline uvicorn replaced."""
        env = self.server_env = self.env(**overrides)
        log_path = self.dir / "migrate.log"
        with log_path.open("wb") as log:
            done = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        if done.returncode:
            raise RuntimeError(f"migrate failed:\n{log_path.read_text(errors='replace')[-3000:]}")
        port = free_port()
        args = {
            "runserver": [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            "daphne": [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "fedsite.asgi:application"],
        }[server]
        proc = Proc(f"server-{server}", args, env, self.dir)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not proc.alive():
                raise RuntimeError(f"the server exited:\n{proc.output()[-3000:]}")
            try:
                return requests.get(f"{url}/status", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, 90, "the server to answer /status")
        return url, proc

    def start_node(self, node_id: str, url: str, *extra: str, **overrides: str) -> Proc:
        env = self.env(FL_NODE_STATE_DIR=str(self.dir / f"node-{node_id}"), **overrides)
        args = [sys.executable, "manage.py", "runnode", "--id", node_id, "--server", url, "--port", "0", *extra]
        proc = Proc(f"node-{node_id}", args, env, self.dir)
        self.procs.append(proc)
        return proc


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


# --- the server's HTTP API, as a node and as an observer ---------------------------------------------
def node_session(url: str, node_id: str) -> requests.Session:
    """Register `node_id` over HTTP; a session that carries its token."""
    session = requests.Session()
    answer = session.post(f"{url}/api/nodes/register", json={"node_id": node_id},
                          headers={"X-Enrollment-Token": ENROLLMENT}, timeout=30)
    if answer.status_code != 201:
        raise RuntimeError(f"registering node {node_id}: {answer.status_code} {answer.text[:300]}")
    session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
    return session


def upload(session: requests.Session, url: str, number: int, body: bytes) -> requests.Response:
    return session.post(f"{url}/api/rounds/{number}/updates", data=body, timeout=600,
                        headers={"Content-Type": "application/octet-stream"})


def requests_get_json(url: str) -> Any:
    answer = requests.get(url, timeout=60)
    answer.raise_for_status()
    return answer.json()


def rounds(url: str) -> list[dict[str, Any]]:
    return requests_get_json(f"{url}/api/rounds")["rounds"]


def current_round(url: str) -> dict[str, Any]:
    return requests_get_json(f"{url}/api/rounds/current")


# --- raw loopback TCP: the baseline ------------------------------------------------------------------
class LoopbackPeer:
    """A tiny TCP server in a thread: per connection it reads (down, up) byte counts, sends `down` bytes,
    reads `up` bytes and acknowledges with one byte. Buffers are preallocated; recv_into copies once."""

    CHUNK = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.payload = memoryview(bytearray(b"\x5a" * self.CHUNK))
        self.sink = memoryview(bytearray(self.CHUNK))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                header = _recv_exact(conn, memoryview(bytearray(16)), 16)
                down, up = int.from_bytes(header[:8], "little"), int.from_bytes(header[8:], "little")
                _send_bytes(conn, self.payload, down)
                _recv_bytes(conn, self.sink, up)
                conn.sendall(b"k")

    def exchange(self, down: int, up: int, sink: memoryview, payload: memoryview) -> float:
        """One connection: receive `down` bytes, send `up` bytes; seconds including the connect."""
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", self.port)) as conn:
            conn.sendall(down.to_bytes(8, "little") + up.to_bytes(8, "little"))
            _recv_bytes(conn, sink, down)
            _send_bytes(conn, payload, up)
            _recv_exact(conn, sink, 1)
        return time.perf_counter() - start

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LoopbackPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send_bytes(conn: socket.socket, payload: memoryview, count: int) -> None:
    while count > 0:
        n = min(count, len(payload))
        conn.sendall(payload[:n])
        count -= n


def _recv_bytes(conn: socket.socket, sink: memoryview, count: int) -> None:
    while count > 0:
        n = conn.recv_into(sink, min(count, len(sink)))
        if n == 0:
            raise ConnectionError("the loopback peer closed early")
        count -= n


def _recv_exact(conn: socket.socket, buf: memoryview, count: int) -> memoryview:
    got = 0
    while got < count:
        n = conn.recv_into(buf[got:count])
        if n == 0:
            raise ConnectionError("the loopback peer closed early")
        got += n
    return buf[:count]


def loopback_transfer_seconds(transfers: list[tuple[int, int]], repeats: int = 3) -> float:
    """Best-of-`repeats` seconds to do each (download, upload) byte pair on its own loopback connection."""
    sink = memoryview(bytearray(LoopbackPeer.CHUNK))
    payload = memoryview(bytearray(b"\xa5" * LoopbackPeer.CHUNK))
    with LoopbackPeer() as peer:
        peer.exchange(1 << 20, 1 << 20, sink, payload)  # warm-up
        return min(sum(peer.exchange(d, u, sink, payload) for d, u in transfers) for _ in range(repeats))


def loopback_upload_rate(nbytes: int, repeats: int = 5) -> float:
    """Bytes per second of one loopback connection sending `nbytes` (best of `repeats`)."""
    return nbytes / loopback_transfer_seconds([(0, nbytes)], repeats)
