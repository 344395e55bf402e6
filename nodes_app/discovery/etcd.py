"""Talking to etcd at all: endpoints, fail-over between them, and saying once that etcd is down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aetcd
import grpc

logger = logging.getLogger("fedsite.discovery")

# A gRPC stream that etcd closed raises InvalidStateError on the next write; OSError includes TimeoutError.
ETCD_ERRORS = (aetcd.ClientError, grpc.aio.AioRpcError, asyncio.InvalidStateError, OSError)
# gRPC pings reveal a silently dead etcd (no RST) to a watch stream; etcd refuses pings more often than 5 s.
CHANNEL_OPTIONS = {"grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 5_000}
RETRY_MAX_S = 2.0  # connection attempts are cheap; a node should be back in etcd soon after etcd is

Job = Callable[[asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def endpoints_parse(value: str) -> list[Endpoint]:
    """ETCD_ENDPOINTS: comma-separated `host[:port]` or `http://host[:port]`; empty means discovery is off."""
    endpoints = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item.startswith("https://"):
            raise ValueError(f"etcd endpoint {item!r}: TLS is not supported; use http:// on a trusted network")
        parts = urlsplit(item if item.startswith("http://") else f"http://{item}")
        try:
            port = parts.port or 2379
        except ValueError:
            raise ValueError(f"etcd endpoint {item!r} has an invalid port") from None
        if not parts.hostname or parts.path.strip("/") or parts.query:
            raise ValueError(f"etcd endpoint {item!r} is not host:port")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        endpoints.append(Endpoint(host, port))
    return endpoints


def rpc_timeout(ttl: int) -> float:
    # A keep-alive must be able to fail over to another endpoint before the lease runs out.
    return min(5.0, max(1.0, ttl / 3))


def describe(exc: BaseException) -> str:
    """One short line for a log, not grpc's multi-line debug string."""
    if isinstance(exc, grpc.aio.AioRpcError):
        text = f"{exc.code().name}: {exc.details()}"
    else:
        text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:200]


class Reachability:
    """Says once that etcd is unreachable and once that it is back, instead of a traceback per retry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down_since: float | None = None
        self.connected = False
        self._bug_logged = False

    def failed(self, endpoints: list[Endpoint], exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.warning("etcd unreachable at %s (%s): %s paused, retrying every few seconds; "
                           "everything else keeps working", ", ".join(map(str, endpoints)), describe(exc), self.what)
        else:
            logger.debug("%s: etcd still unreachable: %s", self.what, describe(exc))

    def bug(self) -> None:
        """Call from an `except Exception`: the traceback is logged the first time only."""
        if not self._bug_logged:
            logger.exception("%s failed unexpectedly; retrying", self.what)
            self._bug_logged = True

    def ok(self, endpoint: Endpoint) -> None:
        if self.down_since is not None:
            logger.info("etcd reachable again at %s after %.1fs: %s resumed", endpoint,
                        time.monotonic() - self.down_since, self.what)
        elif not self.connected:
            logger.info("%s: connected to etcd at %s", self.what, endpoint)
        self.down_since, self.connected = None, True


class Connector:
    """Connects to the first endpoint that answers, starting with the one that worked last (fail-over)."""

    def __init__(self, endpoints: list[Endpoint], timeout: float) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints given")
        self.endpoints, self.timeout, self._first = endpoints, timeout, 0

    async def connect(self) -> tuple[aetcd.Client, Endpoint]:
        last: BaseException | None = None
        count = len(self.endpoints)
        for i in range(count):
            index = (self._first + i) % count
            endpoint = self.endpoints[index]
            # A fresh channel each time: a gRPC channel's own reconnect backoff grows to minutes.
            client = aetcd.Client(endpoint.host, endpoint.port, timeout=self.timeout, options=CHANNEL_OPTIONS)
            try:
                await client.status()
            except ETCD_ERRORS as exc:
                last = exc
                await client.close()
                continue
            self._first = index
            return client, endpoint
        assert last is not None
        raise last


async def stopped_after(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopped; True if `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
    return stop.is_set()


async def until_stopped(awaitable: Awaitable[Any], stop: asyncio.Event) -> tuple[bool, Any]:
    """Run `awaitable` unless `stop` is set first (then cancel it); returns (stopped, result)."""
    work = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    if stop.is_set() and work.cancelled():
        return True, None
    return False, work.result()
