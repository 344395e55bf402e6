"""The real `runserver` (uvicorn and fedsite/webserver.py) against the hardening issue's attacks over raw
sockets: refusals at the headers, before the body is sent; slow bodies and headers cut off; a big listen
backlog; websockets still served."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.e2e

HOST = b"Host: 127.0.0.1\r\n"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def exchange(port: int, raw: bytes, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` and nothing more; the server's whole answer up to its close: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture
def server(start_server) -> tuple[str, int]:
    url, _ = start_server(FL_BODY_TIMEOUT_S="1", FL_HEADER_TIMEOUT_S="1")
    return url, port_of(url)


@pytest.mark.parametrize(("announced", "status", "code"), [
    (b"Content-Length: 209715200\r\n", 413, "too_large"),  # 200 MiB, over FL_MAX_UPDATE_BYTES
    (b"Content-Length: 2000000\r\n", 401, "not_authenticated"),  # 2 MB and no token at all
    (b"", 411, "length_required"),
])
def test_an_upload_is_refused_at_its_headers_before_the_body_is_sent(server, announced, status, code):
    """The answer arrives and the connection closes while the client has sent only headers: the server
    neither waits for nor reads the announced body."""
    _, port = server
    got, headers, body = exchange(port, b"POST /api/rounds/1/updates HTTP/1.1\r\n" + HOST + announced + b"\r\n")
    assert got == status
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body)["error"] == code


def test_a_content_length_beyond_any_integer_gets_an_immediate_400(server):
    _, port = server
    got, _, body = exchange(port, b"POST /api/rounds/1/updates HTTP/1.1\r\n" + HOST
                            + b"Content-Length: 1180591620717411303424\r\n\r\n")
    assert got == 400 and json.loads(body)["error"] == "bad_request"


def test_a_chunked_body_without_credentials_is_cut_at_the_anonymous_limit(server):
    _, port = server
    chunk = b"x" * (256 * 1024)
    raw = (b"POST /api/nodes/register HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + (b"40000\r\n" + chunk + b"\r\n") * 6)  # 1.5 MiB, no end
    got, headers, body = exchange(port, raw)
    assert got == 413 and headers["connection"] == "close" and json.loads(body)["error"] == "too_large"


def test_a_body_that_stops_arriving_is_answered_408_and_closed(server):
    """Slowloris: 1000 bytes announced, one sent. The socket's 20 s timeout would raise if the server held
    the connection the way daphne did."""
    _, port = server
    got, headers, body = exchange(port, b"POST /api/nodes/register HTTP/1.1\r\n" + HOST
                                  + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    assert got == 408 and headers["connection"] == "close" and json.loads(body)["error"] == "timeout"


def test_headers_that_stop_arriving_are_answered_408_and_closed(server):
    _, port = server
    got, _, body = exchange(port, b"GET /status HTTP/1.1\r\n" + HOST + b"X-Slow: ")
    assert got == 408 and "headers" in json.loads(body)["detail"]


def test_oversized_headers_are_refused_with_431(server):
    _, port = server
    got, _, body = exchange(port, b"GET /status HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert got == 431 and json.loads(body)["error"] == "headers_too_large"


def test_a_malformed_request_gets_a_json_400(server):
    _, port = server
    got, _, body = exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert got == 400 and json.loads(body)["error"] == "bad_request"


def test_a_normal_request_on_a_kept_alive_connection_is_not_cut_by_the_header_deadline(server):
    """The header deadline covers each request's headers, not the connection's life: two requests 1.5 s apart
    (longer than FL_HEADER_TIMEOUT_S=1) on one connection are both answered."""
    url, _ = server
    with requests.Session() as session:
        assert session.get(f"{url}/status", timeout=10).status_code == 200
        threading.Event().wait(1.5)
        assert session.get(f"{url}/status", timeout=10).status_code == 200


def test_the_listen_backlog_is_large_and_a_burst_of_connections_is_served(server):
    """daphne listened with a backlog of 50 and reset connections under a burst of 200 uploads."""
    _, port = server
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
    backlog = int(listing.stdout.split()[2])  # Send-Q of a listening socket: its backlog
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    assert backlog == min(2048, somaxconn) and backlog > 50
    barrier = threading.Barrier(200)

    def one(_: int) -> int:
        barrier.wait()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"GET /status HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
            return int(sock.recv(64).split()[1])

    with ThreadPoolExecutor(200) as pool:
        assert list(pool.map(one, range(200))) == [200] * 200
