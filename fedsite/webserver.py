"""The HTTP front door: limits that act before a body is read, and the uvicorn server `runserver` starts.

Two layers, because each sees what the other cannot:

- `BodyLimits`, an ASGI middleware around the whole application (any ASGI server runs it), judges a request
  at its headers: a Content-Length above the path's limit, missing on a POST/PUT/PATCH or not a number is
  refused before one body byte is read; a large body with no credentials at all is refused the same way; a
  chunked body is cut where it passes the limit; a body that stops arriving for `FL_BODY_TIMEOUT_S` ends in
  408. Each refusal is the API's JSON error with `Connection: close`, so the rest of the body is never read.
- `FedsiteHttpProtocol`, uvicorn's httptools protocol with what it lacks: headers must arrive within
  `FL_HEADER_TIMEOUT_S` (a slowloris holding a connection with a half-sent request line is closed with 408)
  and may total at most `FL_MAX_HEADER_BYTES` (431); a request the parser rejects gets a JSON 400.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# The application's own types are its business (Django's handler takes a dict and Mappings): any three arguments.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

log = logging.getLogger("fedsite.webserver")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Paths that take an initial model file (up to FL_MAX_INIT_BYTES); every other path takes an update at most.
INIT_PATHS = ("/api/experiments", "/admin/")


def error_body(code: str, detail: str) -> bytes:
    return json.dumps({"error": code, "detail": detail}).encode()


def body_limit(path: str) -> int:
    if path.startswith(INIT_PATHS):
        return max(settings.FL_MAX_INIT_BYTES, settings.FL_MAX_UPDATE_BYTES)
    return settings.FL_MAX_UPDATE_BYTES


def has_credentials(headers: list[tuple[bytes, bytes]]) -> bool:
    """An Authorization header or a session cookie: whether they are valid is the view's business."""
    session = settings.SESSION_COOKIE_NAME.encode() + b"="
    for name, value in headers:
        if name == b"authorization" or (name == b"cookie" and session in value):
            return True
    return False


class Refusal(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass
class _BodyState:
    """What BodyLimits learns of one request while Django reads it."""

    read: int = 0
    body_done: bool = False
    started: bool = False
    refusal: Refusal | None = None


def judge_headers(scope: Scope) -> tuple[int | None, int]:
    """(announced length or None for a chunked or absent body, the most body bytes this request may send).

    Raises Refusal for what the headers alone condemn."""
    headers = scope["headers"]
    lengths = {value.strip() for name, value in headers if name == b"content-length"}
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    limit = body_limit(scope["path"])
    anonymous_limit = min(limit, settings.FL_ANONYMOUS_BODY_BYTES)
    credentials = has_credentials(headers)
    if chunked:
        return None, limit if credentials else anonymous_limit
    if not lengths:
        if scope["method"] in BODY_METHODS:
            raise Refusal(411, "length_required",
                          f"A {scope['method']} needs a Content-Length header (or chunked transfer encoding).")
        return None, 0
    if len(lengths) > 1:
        raise Refusal(400, "bad_request", "The request has two different Content-Length headers.")
    (raw,) = lengths
    if not (raw.isdigit() and len(raw) <= 20):
        raise Refusal(400, "bad_request", "Content-Length is not a number of bytes.")
    length = int(raw)
    if length > limit:
        raise Refusal(413, "too_large", f"The body has {length} bytes; this server accepts at most {limit} here.")
    if length > anonymous_limit and not credentials:
        raise Refusal(401, "not_authenticated",
                      f"A body over {anonymous_limit} bytes needs credentials (a node token or an operator login).")
    return length, length


class BodyLimits:
    """ASGI middleware: refuse at the headers what the body limits condemn, cut and time out the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            _, allowed = judge_headers(scope)
        except Refusal as refusal:
            await refuse(send, refusal)
            return
        state = _BodyState()
        timeout = settings.FL_BODY_TIMEOUT_S

        async def limited_receive() -> Message:
            if state.body_done:
                return await receive()  # after the body: Django's wait for a disconnect, unbounded
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                state.refusal = Refusal(408, "timeout", f"The body stopped arriving for {timeout:g} s.")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state.read += len(message.get("body", b""))
                if state.read > allowed:
                    state.refusal = (
                        Refusal(413, "too_large", f"The body passed {allowed} bytes, the most accepted here.")
                        if allowed else Refusal(400, "bad_request", "This request announced no body but sent one."))
                    return {"type": "http.disconnect"}
                if not message.get("more_body", False):
                    state.body_done = True
            else:
                state.body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state.started = True
            await send(message)

        await self.app(scope, limited_receive, tracked_send)
        late = state.refusal
        if late is not None and not state.started:
            log.info("%s %s refused: %s", scope["method"], scope["path"], late.detail)
            await refuse(send, late)


async def refuse(send: Send, refusal: Refusal) -> None:
    body = error_body(refusal.code, refusal.detail)
    await send({"type": "http.response.start", "status": refusal.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def raw_response(status: str, code: str, detail: str) -> bytes:
    body = error_body(code, detail)
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


# After answering, a closing connection keeps reading (and dropping) what the client still sends for this long,
# so the client reads the answer instead of a reset: closing a socket with unread data makes the kernel send
# RST, which can destroy the answer before the client reads it (nginx's "lingering close").
LINGER_S = 2.0


class LingeringTransport:
    """The transport a protocol sees: close() half-closes, drains for LINGER_S, then closes."""

    def __init__(self, transport: asyncio.Transport, protocol: Any) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        transport = self._transport
        if transport.is_closing():
            return
        self._protocol.lingering = True
        try:
            if transport.can_write_eof():
                transport.write_eof()
            transport.resume_reading()
        except (OSError, RuntimeError):
            transport.close()
            return
        self._protocol.loop.call_later(LINGER_S, transport.close)


def http_protocol_class() -> type:
    """uvicorn's httptools protocol with a header deadline, a header size cap and JSON errors."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    header_timeout = settings.FL_HEADER_TIMEOUT_S
    max_header_bytes = settings.FL_MAX_HEADER_BYTES

    class FedsiteHttpProtocol(HttpToolsProtocol):
        header_deadline: asyncio.TimerHandle | None = None
        header_bytes = 0
        lingering = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(LingeringTransport(transport, self))  # type: ignore[arg-type]
            self.arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            if self.lingering:
                return  # answered and closing: what the client still sends is dropped unread
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_header_deadline()
            super().connection_lost(exc)

        def arm_header_deadline(self) -> None:
            if self.header_deadline is None:
                self.header_deadline = self.loop.call_later(header_timeout, self.headers_too_slow)

        def disarm_header_deadline(self) -> None:
            if self.header_deadline is not None:
                self.header_deadline.cancel()
                self.header_deadline = None

        def headers_too_slow(self) -> None:
            self.header_deadline = None
            if not self.transport.is_closing():
                self.transport.write(raw_response(
                    "408 Request Timeout", "timeout", f"The request's headers took more than {header_timeout:g} s."))
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.header_bytes = 0
            self.arm_header_deadline()

        def on_url(self, url: bytes) -> None:
            self.count_header_bytes(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.count_header_bytes(len(name) + len(value))
            super().on_header(name, value)

        def count_header_bytes(self, count: int) -> None:
            self.header_bytes += count
            if self.header_bytes > max_header_bytes and not self.transport.is_closing():
                self.disarm_header_deadline()
                self.transport.write(raw_response(
                    "431 Request Header Fields Too Large", "headers_too_large",
                    f"The request line and headers may total at most {max_header_bytes} bytes."))
                self.transport.close()

        def on_headers_complete(self) -> None:
            self.disarm_header_deadline()
            if self.transport.is_closing():
                return
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            self.disarm_header_deadline()
            if self.transport.is_closing():
                return
            self.transport.write(raw_response(
                "400 Bad Request", "bad_request",
                "This is not a valid HTTP/1.1 request (its request line, a header or Content-Length is malformed)."))
            self.transport.close()

    return FedsiteHttpProtocol


def uvicorn_config(app: ASGIApp, host: str, port: int, **overrides: Any) -> Any:
    """uvicorn's settings for `app`, imported by the caller: fedsite.asgi talks to the database when imported,
    which must happen before the event loop runs."""
    import uvicorn

    debug_log = settings.LOG_LEVEL == "DEBUG"
    options: dict[str, Any] = {
        "app": app,
        "host": host,
        "port": port,
        "http": http_protocol_class(),
        "ws": "websockets-sansio",
        "loop": "uvloop",
        "lifespan": "off",
        "backlog": settings.FL_LISTEN_BACKLOG,
        "timeout_keep_alive": settings.FL_KEEP_ALIVE_S,
        "timeout_graceful_shutdown": settings.FL_SHUTDOWN_GRACE_S,
        # The node websocket and dashboard carry models' metadata, not models: 16 MiB is plenty.
        "ws_max_size": 16 * 1024 * 1024,
        # Client addresses and https come from X-Forwarded-* only behind a proxy the operator declared.
        "proxy_headers": settings.FL_BEHIND_PROXY,
        "forwarded_allow_ips": "*" if settings.FL_BEHIND_PROXY else None,
        "server_header": False,
        "access_log": debug_log,
        "log_config": None,  # Django's LOGGING configures every logger, uvicorn's included
    }
    options.update(overrides)
    return uvicorn.Config(**options)
