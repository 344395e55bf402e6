"""`python -m fedsite_node --server URL --id 1 --client mymodule:client`: a node with no Django at all."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from fedsite_node import ClientMismatch, RegistrationError, start_node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedsite_node", description=__doc__)
    parser.add_argument("--server", default=os.environ.get("SERVER_ADDR", "http://127.0.0.1:5000"),
                        help="Server base URL (env SERVER_ADDR).")
    parser.add_argument("--id", dest="node_id", default=os.environ.get("NODE_ID"), help="Node id (env NODE_ID).")
    parser.add_argument("--client", required=True, metavar="MODULE:ATTR",
                        help="A client instance, or a zero-argument callable returning one.")
    parser.add_argument("--experiment", default=os.environ.get("FL_NODE_EXPERIMENT") or None)
    parser.add_argument("--state-dir", default=None, help="Where the token is kept (default var/nodes/<id>).")
    parser.add_argument("--poll-wait", type=float, default=25.0)
    args = parser.parse_args(argv)
    if not args.node_id:
        parser.error("give the node id with --id or NODE_ID")
    if not args.server.startswith(("http://", "https://")):
        parser.error(f"--server {args.server!r} needs its scheme, e.g. http://{args.server}")
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    module_name, _, attr = args.client.partition(":")
    if not module_name or not attr:
        parser.error(f"--client {args.client!r} must be MODULE:ATTR")
    os.environ["NODE_ID"] = args.node_id
    sys.path.insert(0, os.getcwd())
    try:
        client = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        print(f"cannot load --client {args.client}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        start_node(args.server, node_id=args.node_id, client=client, experiment=args.experiment,
                   state_dir=args.state_dir, poll_wait=args.poll_wait, stop=stop)
    except (ClientMismatch, RegistrationError) as exc:
        print(f"node {args.node_id} stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
