"""Web server: the same application (fedsite.asgi) served by daphne, the baseline, and by `runserver`
(uvicorn with httptools and uvloop, fedsite/webserver.py), one after the other in the same run: speed of
trivial, authenticated and upload requests, and how each ends the attacks of the hardening issue.

Speed: requests/s and the server's CPU per request (from /proc), sequential on one keep-alive connection and
from 8 threads; 10 MB uploads. Safety: how many bytes of a 200 MiB body with no token the server lets a client
send before answering; how long it takes to answer `Content-Length: 2**70`; how long a connection that
announced 1000 bytes and sent 1, or half its headers, is held; how many of 300 simultaneous connections are
refused or reset. Caps: 200 MiB sent, 40 s waited.

Run: .venv/bin/python benchmarks/webserver.py [--quick] [--keep]
"""
from __future__ import annotations

import argparse
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.fl.model import MLPSpec  # noqa: E402
from aggregation.fl.serde import params_dumps  # noqa: E402
from benchmarks import _harness as h  # noqa: E402

SERVERS = ("daphne", "runserver")
CAP_S = 40.0
BIG = 200 * 1024 * 1024


def timed_requests(call, count: int, threads: int) -> float:
    start = time.perf_counter()
    if threads == 1:
        for _ in range(count):
            call()
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: call(), range(count)))
    return time.perf_counter() - start


def speed(url: str, server: h.Proc, count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    plain = requests.Session()
    node = h.node_session(url, "bench-speed")
    local = threading.local()

    def threaded_get() -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        session.get(f"{url}/status", timeout=30).raise_for_status()

    cases = {
        "GET /status, 1 connection": (lambda: plain.get(f"{url}/status", timeout=30).raise_for_status(), 1),
        "GET /status, 8 threads": (threaded_get, 8),
        "GET /api/rounds/current, node token": (
            lambda: node.get(f"{url}/api/rounds/current", timeout=30).raise_for_status(), 1),
    }
    for name, (call, threads) in cases.items():
        call()  # warm
        cpu = h.cpu_seconds(server.pid)
        seconds = timed_requests(call, count, threads)
        out[f"{name}: req/s"] = count / seconds
        out[f"{name}: server CPU ms/req"] = (h.cpu_seconds(server.pid) - cpu) / count * 1000
    return out


def uploads(url: str, server: h.Proc, count: int) -> dict[str, float]:
    spec = MLPSpec((1000, 2499, 1))  # 2.5e6 parameters: a 10 MB update
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(shape, dtype=np.float32) * 0.01 for shape in spec.shapes()]
    sessions = [h.node_session(url, f"bench-upload-{i}") for i in range(count)]
    bodies = []
    for i in range(count):
        params[-1][0] = float(i)
        bodies.append(params_dumps(spec, params, {"num_examples": "10"}))
    cpu = h.cpu_seconds(server.pid)
    start = time.perf_counter()
    statuses = [h.upload(sessions[i], url, 1, bodies[i]).status_code for i in range(count)]
    seconds = time.perf_counter() - start
    if statuses.count(201) != count:
        raise RuntimeError(f"uploads answered {statuses}")
    return {"10 MB upload: s each": seconds / count,
            "10 MB upload: server CPU s each": (h.cpu_seconds(server.pid) - cpu) / count}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def answer_or_closed(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    try:
        data = sock.recv(200)
    except TimeoutError:
        return "no answer"
    except OSError as exc:
        return f"reset ({exc.__class__.__name__})"
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed, no answer"


def big_body(port: int) -> tuple[int, float, str]:
    """Bytes of a 200 MiB body (no token) sent before the server answered, the seconds, and its answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    sock.sendall(f"POST /api/rounds/1/updates HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: {BIG}\r\n\r\n".encode())
    chunk = b"\0" * (1 << 20)
    sent = 0
    sock.setblocking(False)
    answer = ""
    while sent < BIG and time.perf_counter() - start < CAP_S:
        readable, writable, _ = select.select([sock], [sock], [], 1.0)
        if readable:
            break
        if writable:
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
    sock.setblocking(True)
    answer = answer_or_closed(sock, CAP_S)
    seconds = time.perf_counter() - start
    sock.close()
    return sent, seconds, answer


def held(port: int, raw: bytes) -> tuple[float, str]:
    """Send `raw`, then nothing: seconds until the server answers or closes (capped), and what it did."""
    sock = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    sock.sendall(raw)
    answer = answer_or_closed(sock, CAP_S)
    seconds = time.perf_counter() - start
    sock.close()
    return seconds, answer


def burst(port: int, count: int = 300) -> int:
    """Open `count` connections at once, each asking GET /status: how many got no HTTP answer."""
    barrier = threading.Barrier(count)

    def one(_: int) -> bool:
        barrier.wait()
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = sock.recv(20)
            sock.close()
            return data.startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    with ThreadPoolExecutor(count) as pool:
        return sum(1 for ok in pool.map(one, range(count)) if not ok)


def listen_backlog(port: int) -> int:
    """The listening socket's backlog: `ss` shows it as Send-Q."""
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
    return int(listing.stdout.split()[2])


def measure(server_name: str, count: int, keep: bool) -> dict[str, object]:
    with h.Fleet(keep=keep) as fleet:
        url, server = fleet.start_server(server=server_name, TOTAL_NODES="1000", FL_MIN_NODES="1000",
                                         FL_ROUND_TIMEOUT_S="3600", FL_MODEL_LAYERS="1000,2499,1")
        port = port_of(url)
        result: dict[str, object] = {}
        result.update(speed(url, server, count))
        result.update(uploads(url, server, max(3, count // 100)))
        sent, seconds, answer = big_body(port)
        result["200 MiB body, no token: MiB sent before the answer"] = sent / 2**20
        result["200 MiB body, no token: answer"] = f"{answer} after {seconds:.2f} s"
        seconds, answer = held(port, b"POST /api/rounds/1/updates HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 1180591620717411303424\r\n\r\n")
        result["Content-Length 2**70: answer"] = f"{answer} after {seconds:.2f} s"
        seconds, answer = held(port, b"POST /api/nodes/register HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        result["1000 announced, 1 sent: held"] = f"{seconds:.1f} s, then {answer}"
        seconds, answer = held(port, b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        result["half the headers: held"] = f"{seconds:.1f} s, then {answer}"
        result["300 connections at once: no answer"] = burst(port)
        result["listen backlog (ss)"] = listen_backlog(port)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per case")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directories in /tmp")
    args = parser.parse_args()
    count = 300 if args.quick else 1000
    results = {name: measure(name, count, args.keep) for name in SERVERS}
    base, new = (results[name] for name in SERVERS)
    print(f"{'measure':<58} {'daphne':>22} {'runserver (uvicorn)':>22} {'ratio':>7}")
    for key in base:
        a, b = base[key], new[key]
        if isinstance(a, float | int) and isinstance(b, float | int):
            ratio = f"{b / a:7.2f}" if a else "      -"
            print(f"{key:<58} {a:>22.4g} {b:>22.4g} {ratio}")
        else:
            print(f"{key:<58} {str(a):>22} {str(b):>22}")
    print(f"\nratio = runserver / daphne; for req/s higher is better, for CPU and seconds lower is better. "
          f"Caps: {BIG >> 20} MiB sent, {CAP_S:g} s waited.")


if __name__ == "__main__":
    main()
