"""The built-in node: fedsite's own MLP trained on the prototype's synthetic data or a real data set.

The protocol (enroll, long-poll, download, upload, retries) is fedsite_node.NodeLoop; this class
adds the built-in model, its local data and the prototype's local API (nodes_app.localmodel).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from aggregation.datasets import NodeData
from aggregation.fl import NDArrays
from aggregation.fl.data import synthetic_regression
from aggregation.fl.manifest import ModelSpec
from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import params_dumps, sha256_hex
from fedsite_node.http import ServerClient
from fedsite_node.loop import NodeLoop, RegistrationError
from nodes_app.localmodel import LocalModelApi
from nodes_app.training import DEFAULT_CONFIG, data_check, fit, fit_and_evaluate

logger = logging.getLogger("fedsite.node")

__all__ = ["DataMismatch", "NodeRunner", "RegistrationError", "default_seed"]


class DataMismatch(RegistrationError):
    """The node's data cannot train the experiment's model (features, task, classes); retrying cannot fix it."""


def default_seed(node_id: str) -> int:
    """Numeric ids seed with themselves, others with crc32, so each node's data is stable."""
    return int(node_id) if node_id.isdigit() else zlib.crc32(node_id.encode("utf-8"))


class NodeRunner(NodeLoop, LocalModelApi):
    """The built-in MLP node; step() is a single unit of work so tests can drive it."""

    spec: MLPSpec

    def __init__(self, node_id: str, client: ServerClient, state_dir: Path | str, *, seed: int | None = None,
                 samples: int = 100, data: NodeData | None = None, **options: Any) -> None:
        super().__init__(node_id, client, state_dir, **{"data_info": data.info if data is not None else {}, **options})
        # Local data: a real data set's partition, or None for the prototype's synthetic regression.
        self.data = data
        self._checked_spec: MLPSpec | None = None
        self.seed = default_seed(node_id) if seed is None else seed
        self.samples = samples
        self.spec_changed(MLPSpec())

    def spec_changed(self, spec: ModelSpec) -> None:
        if not isinstance(spec, MLPSpec):
            raise DataMismatch(f"node {self.node_id} runs the built-in MLP, but this experiment trains a model of "
                               "its own; start the node with --client MODULE:ATTR")
        self.spec = spec
        if self.data is None:
            self.x, self.y = synthetic_regression(self.seed, n=self.samples, features=spec.layers[0])
        else:
            self.x, self.y = self.data.x_train, self.data.y_train
        self.params = init_parameters(spec, self.seed)
        self.model_version = None
        self.model_sha256 = sha256_hex(params_dumps(spec, self.params))
        self._config = dict(DEFAULT_CONFIG)

    def prepare_round(self) -> None:
        """Refuse to train when the local data does not fit the experiment's model: say why, then stop."""
        if self.data is None or self._checked_spec == self.spec:
            return
        try:
            data_check(self.spec, self.data)
        except ValueError as exc:
            logger.error("node %s refused: %s", self.node_id, exc)
            raise DataMismatch(f"node {self.node_id} cannot take part: {exc}") from None
        self._checked_spec = self.spec
        logger.info("node %s: %s fits the experiment's model", self.node_id, self.data.description)

    def fit_round(self, base: NDArrays, config: dict[str, Any], number: int) -> tuple[NDArrays, int, dict[str, float]]:
        """A round's training (nodes_app.training, the code `simulate` runs too) and the metrics to upload."""
        self._config = {**DEFAULT_CONFIG, **config}
        seed = self.seed + number
        if self.data is None:
            before, after, new = self._train(base, self.x, self.y, seed)
            metrics = {"loss": after, "loss_before": before}
        else:
            new, metrics = fit_and_evaluate(self.spec, base, self.data, self._config, seed)
        return new, len(self.x), metrics

    def _train(self, base: NDArrays, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, NDArrays]:
        return fit(self.spec, base, x, y, self._config, seed)
