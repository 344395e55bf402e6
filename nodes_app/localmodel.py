"""The node's local model as its own HTTP API (nodeserver.py) sees it: status, replace, train, predict.

NodeRunner inherits these; they run on the HTTP server's threads, so every access holds the lock.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.model import MLPSpec, forward, unflatten
from aggregation.fl.serde import check_finite, params_dumps, sha256_hex

logger = logging.getLogger("fedsite.node")


class LocalModelApi:
    """Mixin for NodeRunner; the attributes below are set by NodeRunner.__init__ and _set_spec."""

    node_id: str
    spec: MLPSpec
    params: NDArrays
    seed: int
    round: Any
    model_version: Any
    model_sha256: str
    last_loss: Any
    state: str
    _lock: threading.Lock

    def _train(self, base: NDArrays, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, NDArrays]:
        raise NotImplementedError

    def status_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"node_id": self.node_id, "round": self.round, "model_version": self.model_version,
                    "model_sha256": self.model_sha256, "last_loss": self.last_loss, "state": self.state}

    def replace_model(self, vector: np.ndarray) -> None:
        """Install a flat parameter vector; ValueError if it has the wrong length or is not finite."""
        params = unflatten(self.spec, vector)
        check_finite(params, self.spec.names())
        with self._lock:
            self.params, self.model_version = params, None
            self.model_sha256 = sha256_hex(params_dumps(self.spec, params))

    def train_local(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Train the in-memory model on given data with the last round's config; returns (before, after)."""
        with self._lock:
            base = self.params
        before, after, new = self._train(base, x, y, seed=self.seed)
        with self._lock:
            self.params, self.model_version, self.last_loss = new, None, after
            self.model_sha256 = sha256_hex(params_dumps(self.spec, new))
        logger.info("local train request: %d examples, loss %.4f -> %.4f", len(x), before, after)
        return before, after

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return forward(self.spec, self.params, x)
