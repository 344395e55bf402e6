"""A key kept on an etcd lease for as long as the process lives, whatever etcd goes through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aetcd
import grpc

from nodes_app.discovery.etcd import (
    ETCD_ERRORS,
    RETRY_MAX_S,
    Connector,
    Endpoint,
    Reachability,
    describe,
    logger,
    rpc_timeout,
    stopped_after,
    until_stopped,
)


async def lease_keep(endpoints: list[Endpoint], key: str, value: str, ttl: int, stop: asyncio.Event, *,
                     ready: Callable[[], bool] | None = None) -> None:
    """Keep key=value on a lease with one keep-alive stream until `stop`, then revoke the lease.

    Registers again after an outage, a lost lease or a deleted key; `ready` delays the first put."""
    while ready is not None and not ready():
        if await stopped_after(stop, 0.2):
            return
    health = Reachability(f"registration of {key}")
    connector = Connector(endpoints, rpc_timeout(ttl))
    delay = 0.5
    while not stop.is_set():
        client = None
        try:
            client, endpoint = await connector.connect()
            lease = await client.lease(ttl)
            await client.put(key.encode(), value.encode(), lease=lease)
            health.ok(endpoint)
            logger.info("registered %s = %s in etcd (lease %x, TTL %ss)", key, value, lease.id, lease.ttl)
            delay = 0.5
            stopped, _ = await until_stopped(_keep_alive(client, lease, key, value, ttl), stop)
            if stopped:
                await _revoke(client, lease, key)
                return
            logger.warning("etcd lease of %s expired (etcd lost it or was unreachable too long); registering again",
                           key)
            continue
        except ETCD_ERRORS as exc:
            health.failed(endpoints, exc)
        except Exception:  # a bug here must not end the registration for the life of the process
            health.bug()
        finally:
            if client is not None:
                await client.close()
        if await stopped_after(stop, delay):
            return
        delay = min(delay * 2, RETRY_MAX_S)


async def _keep_alive(client: aetcd.Client, lease: aetcd.Lease, key: str, value: str, ttl: int) -> None:
    """Refresh the lease every TTL/3 over one stream; returns when etcd no longer knows the lease."""
    call = client.leasestub.LeaseKeepAlive(metadata=client.metadata)
    timeout = rpc_timeout(ttl)
    try:
        while True:
            try:
                await call.write(aetcd.rpc.LeaseKeepAliveRequest(ID=lease.id))
                reply = await asyncio.wait_for(call.read(), timeout)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                raise aetcd.ConnectionFailedError(f"keep-alive stream lost ({describe(exc)})") from exc
            if reply is grpc.aio.EOF:
                raise aetcd.ConnectionFailedError("etcd closed the keep-alive stream")
            if reply.TTL <= 0:
                return
            # Someone deleted the key (etcdctl del, or the other holder of a shared key went away).
            if await client.get(key.encode()) is None:
                await client.put(key.encode(), value.encode(), lease=lease)
                logger.info("%s was deleted from etcd; registered it again", key)
            await asyncio.sleep(ttl / 3)
    finally:
        call.cancel()


async def _revoke(client: aetcd.Client, lease: aetcd.Lease, key: str) -> None:
    try:
        await client.revoke_lease(lease.id)
        logger.info("deregistered %s from etcd (lease %x revoked)", key, lease.id)
    except ETCD_ERRORS as exc:  # the key goes anyway when the lease runs out
        logger.info("could not revoke the lease of %s (%s); it expires within its TTL", key, describe(exc))
