"""The client interface: Flower's NumPyClient shape, so existing Flower client code runs unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np

NDArrays = list[np.ndarray]
Config = dict[str, Any]  # bool, bytes, float, int or str values, as in Flower
Metrics = dict[str, Any]


class NumPyClient:
    """Your training code, seen by fedsite as three methods (Flower's `NumPyClient`).

    - `get_parameters(config)`: the model's tensors as a list of numpy arrays, always in the same order
      (optional, as in Flower: without it the client receives the tensors in the experiment's order).
    - `fit(parameters, config)`: load `parameters` (that same order), train on local data, and return
      `(new_parameters, num_examples, metrics)`.
    - `evaluate(parameters, config)`: score `parameters` on local held-out data and return
      `(loss, num_examples, metrics)`; optional (a client without it does not take part in federated
      evaluation).

    `config` holds the round's settings (`server_round`, `epochs`, `learning_rate`, `batch_size`, and what
    the strategy adds) and `tensor_names`, a JSON list of the tensors' names in your order. A client may
    also define `get_parameter_names(config)` returning those names (for example
    `list(model.state_dict())`): fedsite then matches your arrays to the experiment's tensors by name,
    otherwise by shape.
    """

    def get_properties(self, config: Config) -> dict[str, Any]:
        return {}

    def get_parameters(self, config: Config) -> NDArrays:
        # As in Flower: a client that does not say takes the tensors in the experiment's order.
        return []

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Metrics]:
        raise NotImplementedError(f"{type(self).__name__} must implement fit(parameters, config)")

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Metrics]:
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluate(parameters, config)")

    def to_client(self) -> NumPyClient:
        """Flower's `client_fn` returns `FlowerClient(...).to_client()`; here the client is its own runner."""
        return self
