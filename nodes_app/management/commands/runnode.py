"""`python manage.py runnode --id N`: run one federated node (its HTTP API plus the training loop)."""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregation.datasets import BUILTIN, DataError, NodeData, node_data_load
from fedsite_node import ClientMismatch, ClientNode, NodeLoop, client_resolve
from fedsite_node.http import ServerClient
from nodes_app.nodeserver import start_node_server
from nodes_app.runner import NodeRunner, RegistrationError

# An upload in flight gets this long to finish after a stop signal; a long-poll is simply abandoned.
STOP_GRACE_S = 5.0
DEFAULT_SERVER = "http://127.0.0.1:5000"
logger = logging.getLogger("fedsite.node")


class Command(BaseCommand):
    help = "Run a node: serve its API, register with the server, then train and upload every round over HTTP."
    # The system checks are the server's (they import its URLconf and with it every view, DRF, Prometheus); a
    # node uses no database, URL, template or admin. `python -m fedsite` (call_command) skipped them already.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        env = os.environ.get
        parser.add_argument("--id", dest="node_id", default=env("NODE_ID"), help="Node id (env NODE_ID).")
        parser.add_argument("--server", default=env("SERVER_ADDR") or None,
                            help=f"Server base URL (env SERVER_ADDR); without it the node finds the server in etcd "
                                 f"when ETCD_ENDPOINTS is set, else uses {DEFAULT_SERVER}.")
        parser.add_argument("--host", default="127.0.0.1", help="Interface for the node's own API.")
        parser.add_argument("--port", type=int, default=None,
                            help="Port for the node's API; default 8001 + id, 0 picks a free port.")
        parser.add_argument("--advertise-url", default=None,
                            help="URL the server should use to reach this node; default http://host:port.")
        parser.add_argument("--state-dir", default=env("FL_NODE_STATE_DIR"),
                            help="Where the node keeps its token (env FL_NODE_STATE_DIR; default var/nodes/<id>).")
        parser.add_argument("--seed", type=int, default=None,
                            help="Synthetic data: the node's data seed (default derived from the id). Real data: the "
                                 "partition seed, the same on every node (default 0).")
        parser.add_argument("--samples", type=int, default=100, help="Number of synthetic training examples.")
        data = parser.add_argument_group("local data (default: the prototype's synthetic regression)")
        data.add_argument("--data", default=None, metavar="|".join([*BUILTIN, "csv:PATH"]),
                          help="A data set bundled with scikit-learn, or a CSV file with a header row.")
        data.add_argument("--target", default=None, help="CSV only: the label column (default: the last column).")
        data.add_argument("--partition", default="iid", metavar="iid|dirichlet:ALPHA|shards:K",
                          help="How the data set is split between the nodes (default iid).")
        data.add_argument("--num-partitions", type=int, default=1, help="Number of partitions (nodes), default 1.")
        data.add_argument("--partition-id", type=int, default=None,
                          help="This node's partition, 0..N-1; default id - 1 for a numeric id.")
        data.add_argument("--val-fraction", type=float, default=0.2,
                          help="Share of the node's rows kept for validation (default 0.2).")
        data.add_argument("--stats-noise", type=float, default=0.0, metavar="Z",
                          help="Gaussian noise multiplier on the feature statistics this node reports (local DP; "
                               "default 0: exact sums). Needs --stats-clip.")
        data.add_argument("--stats-clip", type=float, default=None, metavar="C",
                          help="With --stats-noise: every feature value is clipped to [-C, C] before the sums.")
        own = parser.add_argument_group("your own model and training code (fedsite_node.NumPyClient)")
        own.add_argument("--client", default=None, metavar="MODULE:ATTR",
                         help="Train with your client: ATTR of MODULE (importable from the working directory or "
                              "PYTHONPATH) is a client instance or a zero-argument callable returning one. NODE_ID is "
                              "set to --id before the import. Without it the built-in MLP trains.")
        parser.add_argument("--experiment", default=os.environ.get("FL_NODE_EXPERIMENT") or None,
                            help="The experiment to take part in (env FL_NODE_EXPERIMENT; default: the server's).")
        parser.add_argument("--poll-wait", type=float, default=25.0, help="Long-poll wait in seconds.")
        parser.add_argument("--keep-serving", action="store_true",
                            help="Keep the node API up after the run finishes (until a signal).")
        api = parser.add_argument_group("the node's own API (/status, /message, /train: it can replace and train "
                                        "the model)")
        api.add_argument("--api-token", default=os.environ.get("FL_NODE_API_TOKEN") or None,
                         help="Bearer token the API requires (env FL_NODE_API_TOKEN); default: a random one kept in "
                              "<state-dir>/api_token.")
        api.add_argument("--open-api", action="store_true", default=envbool_node("FL_NODE_OPEN_API"),
                         help="Serve the API without a token, as the prototype did (env FL_NODE_OPEN_API=1).")

    def handle(self, *args: Any, **options: Any) -> None:
        node_id = options["node_id"]
        if not node_id:
            raise CommandError("give the node id with --id or NODE_ID")
        if options["server"] and not options["server"].startswith(("http://", "https://")):
            raise CommandError(f"--server {options['server']!r} needs its scheme, e.g. http://{options['server']}")
        port = options["port"]
        if options["client"] is not None:
            return self._handle_client(node_id, options)
        if port is None:
            if not node_id.isdigit():
                raise CommandError(f"node id {node_id!r} is not a number, so give --port explicitly")
            port = 8001 + int(node_id)
        if options["samples"] < 1:
            raise CommandError("--samples must be at least 1")
        if options["stats_noise"] < 0 or (options["stats_noise"] > 0 and not (options["stats_clip"] or 0) > 0):
            raise CommandError("--stats-noise must be at least 0, and noise needs a positive --stats-clip")
        data = _load_data(node_id, options)
        etcd_endpoints = _etcd_endpoints()
        find_server = not options["server"] and bool(etcd_endpoints)
        client = ServerClient(options["server"] or ("" if find_server else DEFAULT_SERVER),
                              experiment=options["experiment"])
        runner = NodeRunner(
            node_id, client, Path(options["state_dir"] or Path("var") / "nodes" / node_id),
            seed=options["seed"] if data is None else None, samples=options["samples"], poll_wait=options["poll_wait"],
            enrollment_token=os.environ.get("FL_ENROLLMENT_TOKEN") or None, keep_serving=options["keep_serving"],
            data=data, run_seed=(options["seed"] or 0) if data is not None else 0,
            stats_noise=options["stats_noise"], stats_clip=options["stats_clip"],
        )
        if options["api_token"] is not None and len(options["api_token"]) < 16:
            raise CommandError("--api-token (FL_NODE_API_TOKEN) must be at least 16 characters")
        api_token = None if options["open_api"] else (options["api_token"] or node_api_token(runner.token_path.parent))
        if api_token is None:
            logger.warning("node %s: --open-api: anyone who can reach %s:%s can replace and train this node's model",
                           node_id, options["host"], port)
        try:
            server = start_node_server(runner, options["host"], port, api_token=api_token)
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{port}: {exc}") from None
        runner.address = options["advertise_url"] or f"http://{options['host']}:{server.server_port}"
        _run_until_stopped(runner, client, etcd_endpoints, find_server, server)

    def _handle_client(self, node_id: str, options: dict[str, Any]) -> None:
        """A node that trains with the user's client: no built-in data, no local HTTP API (nothing inbound)."""
        builtin_only = [flag for flag, key in (("--data", "data"), ("--target", "target"),
                                               ("--partition-id", "partition_id"), ("--seed", "seed"))
                        if options[key] is not None]
        if builtin_only:
            raise CommandError(f"{', '.join(builtin_only)} apply to the built-in MLP; your client loads its own data")
        os.environ["NODE_ID"] = node_id  # the client's module may read its partition from it
        try:
            numpy_client = client_resolve(client_import(options["client"]))
        except ClientMismatch as exc:
            raise CommandError(str(exc)) from None
        etcd_endpoints = _etcd_endpoints()
        find_server = not options["server"] and bool(etcd_endpoints)
        client = ServerClient(options["server"] or ("" if find_server else DEFAULT_SERVER),
                              experiment=options["experiment"])
        try:
            runner = ClientNode(node_id, client, Path(options["state_dir"] or Path("var") / "nodes" / node_id),
                                numpy_client, address=options["advertise_url"] or "", poll_wait=options["poll_wait"],
                                enrollment_token=os.environ.get("FL_ENROLLMENT_TOKEN") or None,
                                keep_serving=options["keep_serving"])
        except ClientMismatch as exc:
            raise CommandError(str(exc)) from None
        logger.info("node %s: training with client %s (%s)", node_id, options["client"], type(runner.adapter.client)
                    .__name__)
        _run_until_stopped(runner, client, etcd_endpoints, find_server, None)


def envbool_node(name: str) -> bool:
    """A node-side boolean variable: 1/true/yes or 0/false/no (or unset); anything else is refused."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise CommandError(f"{name}={value!r} is not a boolean; use 1 or 0")


def node_api_token(state_dir: Path) -> str:
    """The node API's token: read from <state_dir>/api_token, or made once and kept there (mode 0600)."""
    path = state_dir / "api_token"
    if path.exists():
        kept = path.read_text().strip()
        if len(kept) >= 16:
            return kept
        path.unlink()  # empty or cut short (a crash between create and write): never an open API
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(token)
    logger.info("node API token created in %s (send it as 'Authorization: Bearer <token>')", path)
    return token


def client_import(spec: str) -> Any:
    """The object named by MODULE:ATTR, importable from the working directory; CommandError says what failed."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CommandError(f"--client {spec!r} must be MODULE:ATTR, e.g. --client mymodel:client")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the user's module failing at import
        raise CommandError(f"cannot import {module_name!r} for --client: {type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CommandError(f"module {module_name!r} has no attribute {attr!r} (--client {spec})") from None


def _run_until_stopped(runner: NodeLoop, client: ServerClient, etcd_endpoints: list[Any], find_server: bool,
                       server: Any) -> None:
    """Run the node loop in a thread until it finishes or a signal arrives; a fatal reason becomes CommandError."""
    node_id = runner.node_id
    etcd, follower = _etcd_start(etcd_endpoints, runner, client, find_server)
    stop = runner.stop
    restore = _install_signal_handlers(stop)
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            if follower is None or follower.wait(stop):
                runner.run(stop)
        except BaseException as exc:  # handed to the main thread, which reports it
            failure.append(exc)
        finally:
            stop.set()

    # The loop runs in a daemon thread so a signal is never stuck behind a 25 s long-poll.
    worker = threading.Thread(target=loop, name=f"node-{node_id}", daemon=True)
    worker.start()
    try:
        while not stop.wait(0.5):
            pass
        worker.join(STOP_GRACE_S)
    finally:
        restore()
        if etcd is not None:
            etcd.stop()  # revokes the node's lease: it leaves etcd at once, not a TTL later
        if server is not None:
            server.shutdown()
        client.close()
    if failure:
        exc = failure[0]
        fatal = isinstance(exc, (RegistrationError, ClientMismatch))
        detail = str(exc) if fatal else f"node loop failed: {exc!r}"
        raise CommandError(detail) from exc


def _install_signal_handlers(stop: threading.Event) -> Any:
    """Make SIGINT/SIGTERM set `stop`; returns a function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be installed from the main thread
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


# --- etcd discovery (nodes_app/discovery/), only with ETCD_ENDPOINTS set ---------------------------
def _etcd_endpoints() -> list[Any]:
    if not settings.ETCD_ENDPOINTS:
        logger.info("etcd discovery is off (ETCD_ENDPOINTS is not set)")
        return []
    from nodes_app import discovery  # grpc is only loaded when discovery is on

    try:
        return discovery.endpoints_parse(settings.ETCD_ENDPOINTS)
    except ValueError as exc:
        raise CommandError(f"ETCD_ENDPOINTS: {exc}") from None


def _etcd_start(endpoints: list[Any], runner: NodeLoop, client: ServerClient, find_server: bool) -> tuple[Any, Any]:
    """Register the node in etcd once the server has accepted it; follow the server's URL if asked."""
    if not endpoints:
        return None, None
    from nodes_app import discovery

    follower = discovery.ServerFollower(lambda url: setattr(client, "base_url", url)) if find_server else None
    # Registered only after enrollment: a key seen first would create an etcd-only row, and the
    # node's own enrollment would then be refused as a duplicate.
    thread = discovery.node_discovery_start(endpoints, runner.node_id, runner.address, settings.FL_ETCD_TTL_S,
                                            ready=lambda: runner.registered, follower=follower)
    return thread, follower


# --- local data (aggregation/datasets.py) -----------------------------------------------------------
def _load_data(node_id: str, options: dict[str, Any]) -> NodeData | None:
    """This node's partition of --data, loaded before anything starts so a bad file stops the node at once."""
    if options["data"] is None:
        if options["target"] is not None or options["num_partitions"] != 1 or options["partition_id"] is not None:
            raise CommandError("--target, --num-partitions and --partition-id need --data")
        return None
    num, part = options["num_partitions"], options["partition_id"]
    if part is None:
        if num > 1 and not (node_id.isdigit() and 1 <= int(node_id) <= num):
            raise CommandError(f"give --partition-id (0..{num - 1}): node id {node_id!r} does not map to one")
        part = int(node_id) - 1 if num > 1 else 0
    try:
        data = node_data_load(options["data"], target=options["target"], partitioning=options["partition"],
                              num_partitions=num, partition_id=part, seed=options["seed"] or 0,
                              val_fraction=options["val_fraction"])
    except ImportError as exc:
        raise CommandError(f"--data {options['data']} needs scikit-learn ({exc})") from None
    except DataError as exc:
        raise CommandError(str(exc)) from None
    logger.info("node %s: local data %s", node_id, data.description)
    return data
