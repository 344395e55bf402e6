"""BodyLimits, the ASGI middleware that judges a request at its headers (fedsite/webserver.py), against a
recording application: what reaches the application, and what is refused before a body byte is read."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fedsite.webserver import BodyLimits


class Recorder:
    """The application behind the middleware: reads the whole body as Django's ASGI handler does (stopping at
    a disconnect), then answers 200 with the byte count."""

    def __init__(self) -> None:
        self.called = False
        self.body = b""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(self.body)).encode()})


def scope_for(method: str = "POST", path: str = "/api/rounds/1/updates", headers: list | None = None) -> dict:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


def run(scope: dict, chunks: list[bytes] | None = None, stall: bool = False) -> tuple[Recorder, list[dict], int]:
    """Serve one request; returns the application, the messages sent and how many body chunks were pulled."""
    app = Recorder()
    sent: list[dict] = []
    pending = list(chunks or [b""])
    pulled = 0

    async def receive() -> dict:
        nonlocal pulled
        if not pending:
            if stall:
                await asyncio.sleep(3600)
            return {"type": "http.disconnect"}
        pulled += 1
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending) or stall}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodyLimits(app)(scope, receive, send))
    return app, sent, pulled


def answer(sent: list[dict]) -> tuple[int, dict, dict]:
    start, body = sent[0], sent[1]
    return start["status"], dict(start["headers"]), json.loads(body["body"])


CL = b"content-length"
TOKEN = (b"authorization", b"Bearer t")


def test_a_body_within_the_limits_reaches_the_application_whole() -> None:
    app, sent, _ = run(scope_for(headers=[(CL, b"6"), TOKEN]), [b"abc", b"def"])
    assert app.body == b"abcdef"
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"6"


@pytest.mark.parametrize(("headers", "status", "code"), [
    ([(CL, b"999999999999"), TOKEN], 413, "too_large"),
    ([(CL, b"1180591620717411303424"), TOKEN], 400, "bad_request"),  # 2**70: not even parsed as a number
    ([(CL, b"12abc"), TOKEN], 400, "bad_request"),
    ([(CL, b"-5"), TOKEN], 400, "bad_request"),
    ([(CL, b"5"), (CL, b"6"), TOKEN], 400, "bad_request"),
    ([TOKEN], 411, "length_required"),
    ([(CL, b"2000000")], 401, "not_authenticated"),  # over 1 MiB with no credentials at all
])
def test_headers_alone_condemn_the_request_before_any_body_is_read(headers: list, status: int, code: str) -> None:
    app, sent, pulled = run(scope_for(headers=headers), [b"x" * 10])
    assert not app.called and pulled == 0
    got_status, got_headers, body = answer(sent)
    assert (got_status, body["error"]) == (status, code)
    assert got_headers[b"connection"] == b"close"  # the server stops reading the rest
    assert body["detail"].endswith(".")


def test_a_session_cookie_counts_as_credentials_for_a_large_body(settings: Any) -> None:
    settings.FL_ANONYMOUS_BODY_BYTES = 4
    cookie = (b"cookie", f"csrftoken=a; {settings.SESSION_COOKIE_NAME}=abc".encode())
    app, sent, _ = run(scope_for(headers=[(CL, b"6"), cookie]), [b"abcdef"])
    assert app.body == b"abcdef" and sent[0]["status"] == 200
    app, sent, _ = run(scope_for(headers=[(CL, b"6"), (b"cookie", b"csrftoken=a")]), [b"abcdef"])
    assert not app.called and answer(sent)[0] == 401


def test_initial_model_paths_take_the_larger_init_limit(settings: Any) -> None:
    settings.FL_MAX_UPDATE_BYTES, settings.FL_MAX_INIT_BYTES = 10, 100
    assert answer(run(scope_for(headers=[(CL, b"50"), TOKEN]), [b"x" * 50])[1])[0] == 413
    app, sent, _ = run(scope_for(path="/api/experiments", headers=[(CL, b"50"), TOKEN]), [b"x" * 50])
    assert sent[0]["status"] == 200 and len(app.body) == 50


def test_a_chunked_body_is_cut_where_it_passes_the_limit(settings: Any) -> None:
    settings.FL_MAX_UPDATE_BYTES = 10
    chunked = (b"transfer-encoding", b"chunked")
    app, sent, pulled = run(scope_for(headers=[chunked, TOKEN]), [b"x" * 6, b"x" * 6, b"x" * 6, b"x" * 6])
    assert pulled == 2  # the third chunk is never asked for
    status, headers, body = answer(sent)
    assert (status, body["error"], headers[b"connection"]) == (413, "too_large", b"close")
    # Without credentials the cut comes at FL_ANONYMOUS_BODY_BYTES.
    settings.FL_MAX_UPDATE_BYTES, settings.FL_ANONYMOUS_BODY_BYTES = 100, 8
    _, sent, pulled = run(scope_for(headers=[chunked]), [b"x" * 6, b"x" * 6, b"x" * 6])
    assert pulled == 2 and answer(sent)[0] == 413
    app, sent, _ = run(scope_for(headers=[chunked, TOKEN]), [b"x" * 6, b"x" * 6])
    assert app.body == b"x" * 12 and sent[0]["status"] == 200


def test_a_body_longer_than_announced_is_refused(settings: Any) -> None:
    _, sent, _ = run(scope_for(headers=[(CL, b"3"), TOKEN]), [b"abc", b"def"])
    assert answer(sent)[0] == 413


def test_a_body_that_stops_arriving_ends_in_408(settings: Any) -> None:
    settings.FL_BODY_TIMEOUT_S = 0.2
    app, sent, _ = run(scope_for(headers=[(CL, b"1000"), TOKEN]), [b"{"], stall=True)
    assert app.called and app.body == b"{"
    status, headers, body = answer(sent)
    assert (status, body["error"], headers[b"connection"]) == (408, "timeout", b"close")


def test_after_the_body_the_application_waits_for_a_disconnect_without_a_timeout(settings: Any) -> None:
    """Django listens for a disconnect for as long as a view (a 25 s long-poll) runs: no body timeout there."""
    settings.FL_BODY_TIMEOUT_S = 0.05
    events: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()  # the whole (empty) body
        try:
            await asyncio.wait_for(receive(), 0.3)
        except TimeoutError:
            events.append("still waiting after 0.3 s")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict:
        if not events and not getattr(receive, "served", False):
            receive.served = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodyLimits(app)(scope_for("GET", "/api/rounds/current"), receive, send))
    assert events == ["still waiting after 0.3 s"]
    assert [m.get("status") for m in sent] == [200, None]


def test_requests_without_a_body_and_websockets_pass_untouched() -> None:
    app, sent, _ = run(scope_for("GET", "/status"))
    assert app.called and sent[0]["status"] == 200
    seen: list[dict] = []

    async def ws_app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope)

    asyncio.run(BodyLimits(ws_app)({"type": "websocket", "path": "/ws/dashboard/", "headers": []}, None, None))
    assert seen and seen[0]["type"] == "websocket"
