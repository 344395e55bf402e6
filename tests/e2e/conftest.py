"""Real processes on loopback: a fedsite server and runnode nodes, each with its own log file."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A child process whose output goes to a file the test can read and show on failure."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def wait_until(predicate: Callable[[], object], timeout: float, what: str, procs: list[Proc] = ()) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name} ---\n{p.output()[-3000:]}" for p in procs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


@pytest.fixture
def e2e_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FL_", "DATABASE_", "REDIS_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "fedsite.settings",
        "SECRET_KEY": "e2e-secret-key-not-for-production",
        "DEBUG": "0",
        "FL_DATA_DIR": str(tmp_path / "server"),
        "FL_ENROLLMENT_TOKEN": "e2e-enrollment",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def start_server(e2e_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., tuple[str, Proc]]]:
    procs: list[Proc] = []

    def start(**overrides: str) -> tuple[str, Proc]:
        env = {**e2e_env, **overrides}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        port = free_port()
        proc = Proc(f"server-{port}", [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                    env, tmp_path)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/status", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, 60, "the server to answer /status", [proc])
        return url, proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def start_node(e2e_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(node_id: str, server: str, *extra: str, **overrides: str) -> Proc:
        env = {**e2e_env, "FL_NODE_STATE_DIR": str(tmp_path / f"node-{node_id}"), **overrides}
        args = [sys.executable, "manage.py", "runnode", "--id", node_id, "--server", server, "--port", "0", *extra]
        proc = Proc(f"node-{node_id}", args, env, tmp_path)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


# --- Services for the scaled mode: a throw-away Redis, a fresh PostgreSQL database, Celery.

def require(condition: bool, reason: str) -> None:
    """A missing service fails the test under CI and skips it on a developer machine."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: a test that needs a service must not be skipped)")
    pytest.skip(reason)


class RedisServer:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=(self.dir / "redis.log").open("ab"), stderr=subprocess.STDOUT)
        wait_until(self.ping, 10, "redis to start")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL (FL_TEST_POSTGRES_URL), dropped afterwards."""
    import uuid

    import psycopg

    admin_url = os.environ.get("FL_TEST_POSTGRES_URL", "postgres://fedsite:fedsite@127.0.0.1:5432/fedsite")
    name = f"fedsite_e2e_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        require(False, f"PostgreSQL is not reachable at {admin_url}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scaled_env(e2e_env: dict[str, str], redis_server: RedisServer, postgres_url: str) -> dict[str, str]:
    e2e_env.update({"DATABASE_URL": postgres_url, "REDIS_URL": redis_server.url})
    return e2e_env


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """A real `celery worker` (solo pool: the task runs in the process a test may SIGKILL)."""
    procs: list[Proc] = []

    def start(env: dict[str, str], *extra: str, app: str = "fedsite", name: str = "worker") -> Proc:
        args = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool=solo", "-l", "info",
                "--without-mingle", "--without-gossip", "-n", f"{name}-{len(procs)}@%h", *extra]
        proc = Proc(f"{name}-{len(procs)}", args, env, tmp_path)
        procs.append(proc)
        wait_until(lambda: " ready." in proc.output() or proc.popen.poll() is not None, 60, "the worker", [proc])
        assert proc.popen.poll() is None, proc.output()
        return proc

    yield start
    for proc in procs:
        proc.stop()
