"""Node rows kept in step with etcd discovery, with a dashboard push after each commit.
Discovery never authenticates: a node known only from etcd has a token hash no token can match."""

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from aggregation.events import event_send
from fedsite.errors import ApplicationError
from nodes_app import discovery
from nodes_app.models import Node
from nodes_app.services import address_validate, node_id_validate
from nodes_app.tokens import unusable_token_hash

logger = logging.getLogger("fedsite.discovery")


def _push(kind: str, node: Node) -> None:
    """Tell dashboards about `node` once the transaction commits; a failed push is only logged."""
    event_send(kind, None, {"node_id": node.node_id, "address": node.address, "status": node.status,
                            "source": node.source, "discovery_alive": node.discovery_alive})


def node_discovered(node_id: str, address: str) -> Node:
    """A live etcd key /fedlearn/nodes/{node_id} = address: the node is known and its lease alive.

    An unknown node is created (source etcd, unusable token: it must still enroll to upload). An
    address the node gave over its authenticated API is not replaced by what etcd says."""
    node_id, address = node_id_validate(node_id), address_validate(address)
    now = timezone.now()
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(node_id=node_id).first()
        if node is None:
            node = Node.objects.create(node_id=node_id, address=address, token_hash=unusable_token_hash(),
                                       source=Node.Source.ETCD, discovery_alive=True, last_seen=now)
            logger.info("node %s discovered in etcd at %s", node_id, address)
            _push("node.discovered", node)
            return node
        fields: dict[str, Any] = {}
        if node.discovery_alive is not True:
            fields["discovery_alive"] = True
        if address != node.address and (not node.address or node.source == Node.Source.ETCD):
            fields["address"] = address
        if not fields:
            return node
        # A new key or a new lease is a sign of life at this moment.
        fields["last_seen"] = now
        for name, value in fields.items():
            setattr(node, name, value)
        node.save(update_fields=list(fields))
        logger.info("node %s is alive in etcd (%s)", node_id, node.address or "no address")
        _push("node.discovered", node)
    return node


def node_lease_lost(node_id: str) -> Node | None:
    """The node's etcd key is gone (lease expired or revoked): it is offline until it is back."""
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(node_id=node_id).first()
        if node is None or node.discovery_alive is False:
            return node
        node.discovery_alive = False
        node.save(update_fields=["discovery_alive"])
        logger.info("node %s left etcd (lease expired or revoked): offline", node_id)
        _push("node.lost", node)
    return node


def node_discovery_sync(present: dict[str, str]) -> None:
    """Make the rows match a full listing of /fedlearn/nodes/ (node id -> address): after a
    (re)connect nothing that happened while the watcher was away is missed."""
    for node_id, address in present.items():
        node_discovery_apply(node_id, address)
    gone = (Node.objects.filter(discovery_alive=True).exclude(node_id__in=list(present))
            .values_list("node_id", flat=True))
    for node_id in list(gone):
        node_lease_lost(node_id)


def node_discovery_apply(node_id: str, address: str | None) -> None:
    """One watch event: a key put (address) or deleted (None). Invalid entries are logged and skipped."""
    try:
        if address is None:
            node_lease_lost(node_id)
        else:
            node_discovered(node_id, address)
    except ApplicationError as exc:
        logger.warning("ignoring etcd entry for node %r: %s", node_id[:80], exc.detail)


def _sync(present: dict[str, str]) -> None:
    try:
        node_discovery_sync(present)
    finally:
        connection.close()  # a watcher idles for long stretches: hold no connection the database may drop


def _apply(node_id: str, address: str | None) -> None:
    try:
        node_discovery_apply(node_id, address)
    finally:
        connection.close()


def server_discovery_jobs(endpoints: list[discovery.Endpoint], public_url: str, ttl: int, *,
                          watch: bool = True) -> list[discovery.Job]:
    """The server's etcd side: watch /fedlearn/nodes/ into Node rows; register `public_url` (if any)."""
    jobs: list[discovery.Job] = []
    if watch:
        on_sync, on_change = sync_to_async(_sync), sync_to_async(_apply)
        jobs.append(lambda stop: discovery.prefix_watch(endpoints, discovery.NODES_PREFIX, stop,
                                                        on_sync=on_sync, on_change=on_change))
    if public_url:
        url = address_validate(public_url)
        jobs.append(lambda stop: discovery.lease_keep(endpoints, discovery.SERVER_KEY, url, ttl, stop))
    return jobs
