"""The HTTP front door: limits that act before a body is read, and the uvicorn server `runserver` starts.

Two layers, because each sees what the other cannot:

- `BodyLimits`, an ASGI middleware around the whole application (any ASGI server runs it), judges a request
  at its headers: a Content-Length above the path's limit, missing on a POST/PUT/PATCH or not a number is
  refused before one body byte is read; a large body with no credentials at all is refused the same way; a
  chunked body is cut where it passes the limit; a body that stops arriving for `FL_BODY_TIMEOUT_S` ends in
  408. Each refusal is the API's JSON error with `Connection: close`, so the rest of the body is never read.
- `FedsiteHttpProtocol` (fedsite/httpprotocol.py, with the settings runserver gives uvicorn): headers must
  arrive within `FL_HEADER_TIMEOUT_S` (a slowloris holding a half-sent request line is closed with 408) and
  may total at most `FL_MAX_HEADER_BYTES` (431); a request the parser rejects gets a JSON 400.
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


def judge_headers(scope: Scope) -> int:
    """The most body bytes this request may send; raises Refusal for what the headers alone condemn."""
    headers = scope["headers"]
    lengths = {value.strip() for name, value in headers if name == b"content-length"}
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    limit = body_limit(scope["path"])
    anonymous_limit = min(limit, settings.FL_ANONYMOUS_BODY_BYTES)
    credentials = has_credentials(headers)
    if chunked:
        return limit if credentials else anonymous_limit
    if not lengths:
        if scope["method"] in BODY_METHODS:
            raise Refusal(411, "length_required",
                          f"A {scope['method']} needs a Content-Length header (or chunked transfer encoding).")
        return 0
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
    return length


class BodyLimits:
    """ASGI middleware: refuse at the headers what the body limits condemn, cut and time out the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            allowed = judge_headers(scope)
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
