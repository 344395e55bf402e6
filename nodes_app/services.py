"""Node enrollment and tokens. A token is shown once; only its SHA-256 is stored."""
import logging
import math
import secrets
import unicodedata
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from fedsite.errors import ApplicationError
from nodes_app.models import Node
from nodes_app.tokens import UNUSABLE_TOKEN_PREFIX, token_hash, token_new

logger = logging.getLogger("fedsite.nodes")

# Contact more often than this does not rewrite last_seen: long-polls would otherwise turn
# every idle node into a stream of writes.
TOUCH_EVERY = timedelta(seconds=2)


def node_id_validate(node_id: object) -> str:
    """The node id in NFKC form, so lookalikes (full-width digits, ligatures) are the same id, not a second node."""
    if not isinstance(node_id, str) or not node_id.strip():
        raise ApplicationError("bad_node_id", "node_id must be a non-empty string.")
    node_id = unicodedata.normalize("NFKC", node_id)
    if len(node_id) > 64:
        raise ApplicationError("bad_node_id", "node_id must be at most 64 characters long.")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in node_id):
        raise ApplicationError("bad_node_id", "node_id must not contain control or invisible formatting characters "
                               "(such as a right-to-left override).")
    if node_id != node_id.strip():
        raise ApplicationError("bad_node_id", "node_id must not begin or end with spaces.")
    return node_id


def address_validate(address: object) -> str:
    """A node's own base URL: empty, or http(s)://host[:port][/path] without credentials."""
    if address in (None, ""):
        return ""
    if not isinstance(address, str) or len(address) > 200:
        raise ApplicationError("bad_address", "address must be a URL of at most 200 characters.")
    try:
        parts = urlsplit(address)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ApplicationError("bad_address", f"address {address!r} is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError("bad_address", "address must start with http:// or https:// and name a host.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ApplicationError("bad_address", "address must not carry credentials, a query or a fragment.")
    if any(c.isspace() or c in "<>\"'" for c in address):
        raise ApplicationError("bad_address", "address contains characters that are not allowed in a URL.")
    return address.rstrip("/")


def enrollment_check(enrollment_token: str | None) -> None:
    expected = settings.FL_ENROLLMENT_TOKEN
    if expected:
        # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        given = (enrollment_token or "").encode("utf-8", "surrogateescape")
        if not given or not secrets.compare_digest(given, expected.encode()):
            raise ApplicationError(
                "bad_enrollment_token",
                "Registration needs the server's enrollment token in the X-Enrollment-Token header.", 403,
            )
        return
    if settings.DEBUG:
        logger.warning("open enrollment: a node registered without a token because DEBUG is on")
        return
    raise ApplicationError(
        "enrollment_closed",
        "Enrollment is closed: set FL_ENROLLMENT_TOKEN on the server, or issue a token with "
        "'python manage.py createnode --id N'.", 403,
    )


def node_register(*, node_id: str, address: str, enrollment_token: str | None,
                  source: str = Node.Source.API, data: dict[str, Any] | None = None) -> tuple[Node, str]:
    """Enroll a new node and return it with its token (the only time the token is visible)."""
    node_id = node_id_validate(node_id)
    address = address_validate(address)
    data = node_data_validate(data) if data is not None else {}
    enrollment_check(enrollment_token)
    token = token_new()
    try:
        with transaction.atomic():
            node = Node.objects.create(
                node_id=node_id, address=address, token_hash=token_hash(token), source=source,
                last_seen=timezone.now(), data=data,
            )
    except IntegrityError:
        # A node seen in etcd before it enrolled has a row with an unusable token: its first
        # enrollment claims that row.
        claimed = Node.objects.filter(
            node_id=node_id, source=Node.Source.ETCD, token_hash__startswith=UNUSABLE_TOKEN_PREFIX
        ).update(token_hash=token_hash(token), source=Node.Source.API, last_seen=timezone.now(), data=data,
                 **({"address": address} if address else {}))
        if claimed:
            logger.info("node %s enrolled (it was known from etcd)", node_id)
            return Node.objects.get(node_id=node_id), token
        raise ApplicationError(
            "node_exists", f"Node {node_id} is already registered; authenticate with its token to update it.", 409
        ) from None
    logger.info("node %s registered (%s)", node_id, address or "no address")
    return node, token


def node_update_address(node: Node, address: str, data: dict[str, Any] | None = None) -> Node:
    """A known node registering again (a restart): its address and data, and it is no longer done."""
    node.address = address_validate(address)
    node.last_seen = timezone.now()
    node.done_at = None
    fields = ["address", "last_seen", "done_at"]
    if data is not None:
        node.data = node_data_validate(data)
        fields.append("data")
    node.save(update_fields=fields)
    return node


DATA_KEYS = 16
DATA_CHARS = 200


def node_data_validate(data: object) -> dict[str, Any]:
    """What a node says about its data: at most 16 names to short strings or finite numbers."""
    if not isinstance(data, dict) or len(data) > DATA_KEYS:
        raise ApplicationError("bad_data", f"data must be an object of at most {DATA_KEYS} names to strings or "
                               "numbers.")
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise ApplicationError("bad_data", "data's names must be strings of 1 to 64 characters.")
        if isinstance(value, str) and len(value) <= DATA_CHARS:
            clean[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            clean[key] = value
        else:
            raise ApplicationError("bad_data", f"data[{key!r}] must be a string of at most {DATA_CHARS} characters "
                                   "or a finite number.")
    return clean


def node_issue_token(node_id: str, *, address: str = "", rotate: bool = False) -> tuple[Node, str]:
    """Create a node with a token from the command line, or give an existing node a new token."""
    node_id = node_id_validate(node_id)
    address = address_validate(address)
    token = token_new()
    node = Node.objects.filter(node_id=node_id).first()
    if node is None:
        node = Node.objects.create(node_id=node_id, address=address, token_hash=token_hash(token),
                                   source=Node.Source.CLI)
        return node, token
    if not rotate:
        raise ApplicationError("node_exists", f"Node {node_id} already exists; use --rotate to issue a new token.",
                               409)
    node.token_hash = token_hash(token)
    if address:
        node.address = address
    node.save(update_fields=["token_hash", "address"])
    return node, token


def node_touch(node: Node, experiment: Any = None) -> None:
    """Record a contact (at most every TOUCH_EVERY), and the experiment the node is working on when it changed."""
    now = timezone.now()
    moved = experiment is not None and node.experiment_id != experiment.pk
    if node.last_seen is None or now - node.last_seen >= TOUCH_EVERY or moved:
        fields: dict[str, Any] = {"last_seen": now}
        if moved:
            fields["experiment"] = node.experiment = experiment
        Node.objects.filter(pk=node.pk).update(**fields)
        node.last_seen = now


def node_done(node: Node, experiment: Any) -> Node:
    """The node left cleanly because `experiment`'s run ended: it shows as done instead of ageing to offline."""
    if experiment.status not in ("finished", "stopped"):
        raise ApplicationError("run_not_over", f"Experiment {experiment.name!r} is {experiment.status}; a node is "
                               "done only after its run has finished or been stopped.", 409)
    now = timezone.now()
    Node.objects.filter(pk=node.pk).update(done_at=now, last_seen=now, experiment=experiment)
    node.done_at = node.last_seen = now
    node.experiment = experiment
    logger.info("node %s is done with experiment %s", node.node_id, experiment.name)
    return node
