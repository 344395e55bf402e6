"""Discovery for synchronous processes: jobs on a loop in a thread; a node's key and its server's URL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from nodes_app.discovery.etcd import Endpoint, Job, logger
from nodes_app.discovery.lease import lease_keep
from nodes_app.discovery.watch import prefix_watch

NODES_PREFIX = "/fedlearn/nodes/"  # the prototype's layout: /fedlearn/nodes/{NODE_ID} = the node's base URL
SERVER_KEY = "/fedlearn/server"  # the server's public URL


async def jobs_run(jobs: list[Job], stop: asyncio.Event) -> None:
    """Run discovery jobs until `stop` is set and they have all finished."""
    await asyncio.gather(*(job(stop) for job in jobs))


class DiscoveryThread:
    """Discovery jobs on their own asyncio loop in a daemon thread, for synchronous processes."""

    def __init__(self, name: str, jobs: list[Job]) -> None:
        self.jobs = jobs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> DiscoveryThread:
        self.thread.start()
        self._ready.wait(5)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the jobs (a registration revokes its lease) and wait up to `timeout` seconds."""
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has already ended
                pass
        self.thread.join(timeout)

    def _main(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await jobs_run(self.jobs, self._stop)

        try:
            asyncio.run(main())
        except Exception:  # a discovery bug must not take the process down; the jobs log their own trouble
            logger.exception("etcd discovery stopped")


class ServerFollower:
    """A node's view of SERVER_KEY: the server's URL once etcd has it, updated when it moves."""

    def __init__(self, on_url: Callable[[str], None]) -> None:
        self.on_url, self.url = on_url, ""
        self.found = threading.Event()

    async def on_sync(self, items: dict[str, str]) -> None:
        if "" in items:
            await self.on_change("", items[""])

    async def on_change(self, name: str, value: str | None) -> None:
        if name or value is None or value.rstrip("/") == self.url:
            return  # a deleted key keeps the last URL: the server may just be restarting
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            logger.warning("ignoring %s = %r in etcd: not an http(s) URL", SERVER_KEY, value[:200])
            return
        logger.info("server %s at %s (from etcd %s)", "moved" if self.url else "found", value, SERVER_KEY)
        self.url = value.rstrip("/")
        self.on_url(self.url)
        self.found.set()

    def wait(self, stop: threading.Event) -> bool:
        """Block until etcd has told us the server's URL (True) or `stop` is set (False)."""
        if not self.found.is_set():
            logger.info("no server address given: waiting for the server's URL under %s in etcd", SERVER_KEY)
        while not self.found.wait(0.2):
            if stop.is_set():
                return False
        return True

    def job(self, endpoints: list[Endpoint]) -> Job:
        return lambda stop: prefix_watch(endpoints, SERVER_KEY, stop, on_sync=self.on_sync, on_change=self.on_change)


def node_discovery_start(endpoints: list[Endpoint], node_id: str, address: str, ttl: int, *,
                         ready: Callable[[], bool] | None = None,
                         follower: ServerFollower | None = None) -> DiscoveryThread:
    """A node's etcd side: its key on a lease (after `ready()`), and the server's URL if `follower`."""
    key = NODES_PREFIX + node_id
    jobs: list[Job] = [lambda stop: lease_keep(endpoints, key, address, ttl, stop, ready=ready)]
    if follower is not None:
        jobs.append(follower.job(endpoints))
    return DiscoveryThread(f"etcd-node-{node_id}", jobs).start()
