"""Real processes on loopback: a fedsite server and runnode nodes, each with its own log file."""
import os
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
