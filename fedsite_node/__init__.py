"""fedsite's node SDK: run your own training code as a federated node. Imports no Django.

    from fedsite_node import NumPyClient, start_node

    class MyClient(NumPyClient):
        def get_parameters(self, config): ...
        def fit(self, parameters, config): ...        # -> (parameters, num_examples, metrics)
        def evaluate(self, parameters, config): ...   # -> (loss, num_examples, metrics)

    start_node("http://127.0.0.1:5000", node_id="1", client=MyClient(), experiment="mnist-cnn")

`python manage.py runnode --id 1 --client mymodule:MyClient` runs the same loop from the server's checkout.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aggregation.fl.serde import dumps
from fedsite_node.adapter import ClientFailed, ClientMismatch
from fedsite_node.http import ServerClient
from fedsite_node.loop import ClientNode, NodeLoop, RegistrationError
from fedsite_node.numpy_client import NumPyClient

__all__ = ["ClientFailed", "ClientMismatch", "ClientNode", "NodeLoop", "NumPyClient", "RegistrationError",
           "client_resolve", "save_model", "start_node"]


def start_node(server: str, *, node_id: str, client: Any, experiment: str | None = None,
               state_dir: str | Path | None = None, enrollment_token: str | None = None, poll_wait: float = 25.0,
               stop: threading.Event | None = None) -> ClientNode:
    """Run `client` as node `node_id` of `server` until the run finishes (or `stop` is set); returns the node.

    The node's token is kept in `state_dir/token` (default var/nodes/<id>), so a restart is the same node.
    `client` is a NumPyClient-shaped object or a zero-argument callable returning one.
    """
    client = client_resolve(client)
    connection = ServerClient(server, experiment=experiment)
    node = ClientNode(node_id, connection, Path(state_dir or Path("var") / "nodes" / node_id), client,
                      poll_wait=poll_wait,
                      enrollment_token=enrollment_token or os.environ.get("FL_ENROLLMENT_TOKEN") or None)
    try:
        node.run(stop)
    finally:
        connection.close()
    return node


def save_model(path: str | Path, tensors: Mapping[str, Any]) -> None:
    """Write named tensors (a state_dict, or any name -> array mapping) as safetensors, keeping their order.

    The file is what `createexperiment --init` takes: version 0 of your model, float32 on the server.
    """
    arrays = {str(name): t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
              for name, t in tensors.items()}
    Path(path).write_bytes(dumps(arrays))


def client_resolve(obj: Any) -> Any:
    """A client instance as it is; a class or a zero-argument factory called to make one."""
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "fit") and not hasattr(obj, "numpy_client")):
        try:
            obj = obj()
        except TypeError as exc:
            raise ClientMismatch(f"{getattr(obj, '__name__', obj)!r} needs arguments ({exc}); point at an instance "
                                 "or at a function that takes none and returns the client") from None
    return obj


logging.getLogger("fedsite.node").addHandler(logging.NullHandler())
