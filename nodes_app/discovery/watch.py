"""A prefix mirrored from etcd: a full listing after every (re)connect, then the changes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aetcd

from nodes_app.discovery.etcd import (
    ETCD_ERRORS,
    RETRY_MAX_S,
    Connector,
    Endpoint,
    Reachability,
    logger,
    stopped_after,
    until_stopped,
)


async def prefix_watch(endpoints: list[Endpoint], prefix: str, stop: asyncio.Event, *,
                       on_sync: Callable[[dict[str, str]], Awaitable[None]],
                       on_change: Callable[[str, str | None], Awaitable[None]], timeout: float = 5.0) -> None:
    """Mirror the keys under `prefix` until `stop`: `on_sync(all)` after every (re)connect, then
    `on_change(name, value or None on delete)`; names are relative to the prefix.

    Each (re)connect lists the prefix and watches from that listing's revision + 1, so nothing is
    lost across an etcd restart, a compaction or a cluster rebuilt from scratch."""
    health = Reachability(f"watch of {prefix}")
    connector = Connector(endpoints, timeout)
    delay, last_handler_error = 0.5, ""
    while not stop.is_set():
        client = None
        try:
            client, endpoint = await connector.connect()
            listing = await client.get_prefix(prefix.encode())
            items = dict(item for kv in listing if (item := _decode(prefix, kv.key, kv.value)))
            health.ok(endpoint)
            await _handle(on_sync(items))
            watch = await client.watch_prefix(prefix.encode(), start_revision=listing.header.revision + 1)
            delay, last_handler_error = 0.5, ""
            stopped, _ = await until_stopped(_events(watch, prefix, on_change), stop)
            if stopped:
                return
        except aetcd.RevisionCompactedError:
            logger.info("watch of %s: etcd compacted the history; resyncing from a fresh listing", prefix)
        except ETCD_ERRORS as exc:
            health.failed(endpoints, exc)
        except _HandlerFailed as exc:
            # Applying a change failed (the database?): resync from a fresh listing after a pause.
            if str(exc.__cause__) != last_handler_error:
                logger.error("watch of %s: applying a change failed (%r); resyncing", prefix, exc.__cause__)
                last_handler_error = str(exc.__cause__)
        except Exception:  # a bug here must not end the watch for the life of the process
            health.bug()
        finally:
            if client is not None:
                await client.close()
        if await stopped_after(stop, delay):
            return
        delay = min(delay * 2, RETRY_MAX_S)


class _HandlerFailed(Exception):
    pass


async def _handle(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception as exc:
        raise _HandlerFailed() from exc


async def _events(watch: aetcd.Watch, prefix: str, on_change: Callable[[str, str | None], Awaitable[None]]) -> None:
    async for event in watch:
        if item := _decode(prefix, event.kv.key, event.kv.value):
            await _handle(on_change(item[0], item[1] if event.kind == "PUT" else None))
    raise aetcd.ConnectionFailedError("the watch ended")


def _decode(prefix: str, key: bytes, value: bytes) -> tuple[str, str] | None:
    try:
        return key.decode()[len(prefix):], value.decode()
    except UnicodeDecodeError:
        logger.warning("ignoring etcd key %r: not UTF-8", key[:100])
        return None
