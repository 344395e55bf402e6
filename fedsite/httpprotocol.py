"""uvicorn's httptools protocol with what it lacks for fedsite: a header deadline (`FL_HEADER_TIMEOUT_S`, 408), a cap
on the request line and headers (`FL_MAX_HEADER_BYTES`, 431), a JSON 400 for a request the parser rejects, and a
lingering close. Here too: the settings `runserver` gives uvicorn. Imported only by `runserver`."""
from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings

from fedsite.webserver import ASGIApp, error_body


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
