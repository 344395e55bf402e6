"""A real node on an FL_UPDATE_ENCODING=int8 server sends int8 delta bodies: seen on the wire through a
recording proxy, and stored by the server as the float32 decoding of exactly those bytes."""
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests

from aggregation.fl.compression import update_decode
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import loads, params_dumps, params_loads, sha256_hex
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}


class RecordingProxy(ThreadingHTTPServer):
    """Forwards every request to `upstream` and keeps the update uploads (path, body) it saw."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream, self.uploads = upstream, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and self.path.split("?")[0].endswith("/updates"):
            self.server.uploads.append((self.path, body))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        answer = requests.request(self.command, self.server.upstream + self.path, data=body or None,
                                  headers=headers, timeout=60)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy_to() -> Iterator:
    proxies = []

    def start(upstream: str) -> RecordingProxy:
        proxy = RecordingProxy(upstream)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.shutdown()
        proxy.server_close()


def test_a_node_uploads_int8_deltas_when_the_experiment_asks_for_them(start_server, start_node, proxy_to):
    # Prepare
    url, server = start_server(TOTAL_NODES="1", FL_MIN_NODES="1", FL_MAX_ROUNDS="2", FL_EPOCHS="3",
                               FL_UPDATE_ENCODING="int8")
    proxy = proxy_to(url)

    # Execute
    node = start_node("1", proxy.url)
    wait_until(lambda: requests.get(f"{url}/status", timeout=5).json()["run_status"] == "finished", 90,
               "two int8 rounds", [server, node])

    # Assert: the round config asked for int8, and both uploads on the wire were int8 deltas
    spec = MLPSpec()
    assert requests.get(f"{url}/api/experiments", timeout=5).json()[0]["update_encoding"] == "int8"
    assert [path.split("?")[0] for path, _ in proxy.uploads] == ["/api/rounds/1/updates", "/api/rounds/2/updates"]
    for number, (_, body) in enumerate(proxy.uploads, start=1):
        tensors, metadata = loads(body)
        assert metadata["encoding"] == "int8-delta" and metadata["base_version"] == str(number - 1)
        assert {tensors[n].dtype for n in spec.names()} == {np.dtype(np.int8)}
        stored = requests.get(f"{url}/api/rounds/{number}", timeout=5).json()["updates"][0]
        # The server keeps the float32 decoding of exactly these bytes against the round's model.
        base_body = requests.get(f"{url}/api/models/{number - 1}/download", timeout=10).content
        decoded = update_decode(spec, body, params_loads(spec, base_body)[0])[0]
        assert stored["sha256"] == sha256_hex(params_dumps(spec, decoded))
        # One byte per parameter and a float32 scale per tensor, after the JSON header.
        data_bytes = len(body) - 8 - int.from_bytes(body[:8], "little")
        assert data_bytes == spec.num_params() + 4 * len(spec.names())
        assert len(body) < stored["size"] / 2
    assert "update encoded as int8" in node.output()
