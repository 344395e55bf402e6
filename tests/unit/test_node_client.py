"""ServerClient against a tiny stdlib stub of the server: answers map to results or the two exceptions."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fedsite_node.http import ServerClient, ServerRejected, ServerUnavailable

MODEL = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "


class Stub(BaseHTTPRequestHandler):
    """Routes by path; records what each request carried in `self.server.seen`."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._answer(status, json.dumps(payload).encode())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.seen.append({"path": url.path, "query": parse_qs(url.query), "headers": dict(self.headers)})
        if url.path == "/status":
            self._json(200, {"status": "running", "message": "Server is active"})
        elif url.path == "/api/rounds/current":
            wait = float(parse_qs(url.query).get("wait", ["0"])[0])
            time.sleep(wait * 0.8)  # a long-poll held for most of its wait
            self._json(200, {"number": 3, "status": "open"})
        elif url.path == "/api/models/2/download":
            self._answer(200, MODEL, "application/octet-stream", X_Model_Sha256="abc", X_Model_Version="2")
        elif url.path == "/api/models/3/download":  # announces more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(MODEL) * 2))
            self.end_headers()
            self.wfile.write(MODEL)
            self.close_connection = True
        elif url.path.startswith("/html/"):
            self._answer(200, b"<html>a login page</html>", "text/html")
        elif url.path.startswith("/proxy404/"):
            self._answer(404, b"<html>not here</html>", "text/html")
        elif url.path.startswith("/broken/"):
            self._json(503, {"error": "unavailable", "detail": "Try later."})
        else:
            self._json(404, {"error": "not_found", "detail": "No such thing."})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if self.path == "/api/nodes/register":
            self._json(409, {"error": "node_exists", "detail": "Node 1 is already registered."})
        elif self.path == "/api/rounds/3/updates":
            self._json(201, {"round": 3, "node_id": "1", "received": 1, "required": 3, "status": "open"})
        elif self.path == "/api/rounds/2/updates":
            self._json(409, {"error": "round_closed", "detail": "Round 2 is closed.", "current_round": 3})


@pytest.fixture
def stub() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def base(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_status_returns_the_json_object(stub: ThreadingHTTPServer) -> None:
    assert ServerClient(base(stub)).status()["message"] == "Server is active"


def test_a_4xx_json_error_becomes_server_rejected_with_code_and_detail(stub: ThreadingHTTPServer) -> None:
    client = ServerClient(base(stub), token="tok")
    with pytest.raises(ServerRejected) as caught:
        client.register("1", "http://127.0.0.1:8002", enrollment_token="enroll")

    assert (caught.value.status, caught.value.error) == (409, "node_exists")
    assert caught.value.detail == "Node 1 is already registered."
    sent = stub.seen[-1]  # type: ignore[attr-defined]
    assert json.loads(sent["body"]) == {"node_id": "1", "address": "http://127.0.0.1:8002"}
    assert sent["headers"]["Authorization"] == "Bearer tok"
    assert sent["headers"]["X-Enrollment-Token"] == "enroll"


def test_extra_keys_of_an_error_are_kept_in_the_payload(stub: ThreadingHTTPServer) -> None:
    with pytest.raises(ServerRejected) as caught:
        ServerClient(base(stub)).upload_update(2, b"x")
    assert caught.value.error == "round_closed" and caught.value.payload["current_round"] == 3


def test_a_4xx_without_json_is_still_a_rejection(stub: ThreadingHTTPServer) -> None:
    with pytest.raises(ServerRejected) as caught:
        ServerClient(base(stub) + "/proxy404").status()
    assert (caught.value.status, caught.value.error) == (404, "http_404")


def test_a_5xx_answer_means_the_server_is_unavailable(stub: ThreadingHTTPServer) -> None:
    with pytest.raises(ServerUnavailable, match="503"):
        ServerClient(base(stub) + "/broken").status()


def test_a_non_json_success_means_the_server_is_unavailable(stub: ThreadingHTTPServer) -> None:
    with pytest.raises(ServerUnavailable, match="not a JSON object"):
        ServerClient(base(stub) + "/html").status()


def test_a_refused_connection_means_the_server_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServerUnavailable):
        ServerClient(f"http://127.0.0.1:{port}", timeout=2).status()


def test_a_long_poll_may_outlast_the_plain_timeout(stub: ThreadingHTTPServer) -> None:
    client = ServerClient(base(stub), token="tok", timeout=0.3)

    answer = client.current_round(wait=0.5, known=2)

    assert answer["number"] == 3
    seen = stub.seen[-1]  # type: ignore[attr-defined]
    assert seen["query"] == {"wait": ["0.5"], "known": ["2"]}
    assert seen["headers"]["Authorization"] == "Bearer tok"


def test_download_returns_the_bytes_and_the_sha256_header(stub: ThreadingHTTPServer) -> None:
    assert ServerClient(base(stub)).download_model(2) == (MODEL, "abc")


def test_a_download_cut_short_is_the_server_being_unavailable_not_a_model(stub: ThreadingHTTPServer) -> None:
    with pytest.raises(ServerUnavailable, match="while reading the model"):
        ServerClient(base(stub)).download_model(3)


def test_upload_sends_octet_stream_and_returns_status_and_json(stub: ThreadingHTTPServer) -> None:
    status, answer = ServerClient(base(stub), token="tok").upload_update(3, b"\x00\x01")

    assert (status, answer["received"], answer["required"]) == (201, 1, 3)
    sent = stub.seen[-1]  # type: ignore[attr-defined]
    assert sent["body"] == b"\x00\x01" and sent["headers"]["Content-Type"] == "application/octet-stream"
