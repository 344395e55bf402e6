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

from aggregation.datasets import DataError, NodeData, node_data_scale, node_feature_stats
from aggregation.fl import NDArrays
from aggregation.fl.data import synthetic_regression
from aggregation.fl.features import Scaling
from aggregation.fl.manifest import ModelSpec
from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import params_dumps, sha256_hex
from fedsite_node.http import ServerClient, ServerRejected
from fedsite_node.loop import NodeLoop, RegistrationError
from nodes_app.localmodel import LocalModelApi
from nodes_app.training import DEFAULT_CONFIG, data_check, fit, fit_and_evaluate, shuffle_seed

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
                 samples: int = 100, data: NodeData | None = None, run_seed: int = 0,
                 stats_noise: float = 0.0, stats_clip: float | None = None,
                 stats_rng: np.random.Generator | None = None, **options: Any) -> None:
        super().__init__(node_id, client, state_dir, **{"data_info": data.info if data is not None else {}, **options})
        # Local data: a real data set's partition (raw; scaled as the experiment says before the first round),
        # or None for the prototype's synthetic regression.
        self.raw_data = self.data = data
        self._checked_spec: MLPSpec | None = None
        self.seed = default_seed(node_id) if seed is None else seed
        # Shuffles depend on (run seed, node, round): `simulate --seed S` and `runnode --seed S` agree.
        self.run_seed, self.node_number = run_seed, default_seed(node_id)
        # DP noise draws fresh OS entropy unless a generator is given (tests): a known seed would undo it.
        self.stats_noise, self.stats_clip, self.stats_rng = stats_noise, stats_clip, stats_rng
        self._stats_sent = False
        self.samples = samples
        self.spec_changed(MLPSpec())

    def spec_changed(self, spec: ModelSpec) -> None:
        if not isinstance(spec, MLPSpec):
            raise DataMismatch(f"node {self.node_id} runs the built-in MLP, but this experiment trains a model of "
                               "its own; start the node with --client MODULE:ATTR")
        self.spec = spec
        self.data, self._stats_sent = self.raw_data, False  # another experiment may scale differently
        if self.data is None:
            self.x, self.y = synthetic_regression(self.seed, n=self.samples, features=spec.layers[0])
        else:
            self.x, self.y = self.data.x_train, self.data.y_train
        self.params = init_parameters(spec, self.seed)
        self.model_version = None
        self.model_sha256 = sha256_hex(params_dumps(spec, self.params))
        self._config = dict(DEFAULT_CONFIG)

    def prepare_round(self) -> bool:
        """Refuse to train when the local data does not fit the experiment's model (say why, then stop), then
        scale it as the experiment says: False while the federation's statistics are not in."""
        if self.data is None:
            return True
        if self._checked_spec != self.spec:
            # Before any report: statistics of data the model cannot take would only be refused.
            try:
                data_check(self.spec, self.data)
            except ValueError as exc:
                logger.error("node %s refused: %s", self.node_id, exc)
                raise DataMismatch(f"node {self.node_id} cannot take part: {exc}") from None
            self._checked_spec = self.spec
            logger.info("node %s: %s fits the experiment's model", self.node_id, self.data.description)
        return self._scale_data()

    def _scale_data(self) -> bool:
        """Apply the experiment's feature scaling to the raw rows once: True when the data is ready to train on.

        global: report count/sum/sum of squares (POST /api/features), then wait for the combined scaling;
        node: report too (the server scores its test set with the combined statistics), scale with our own;
        range: the data set's fixed range. A server that does not say (it predates federated statistics) gets
        nothing and the node scales with its own statistics, as nodes did then.
        """
        assert self.raw_data is not None and self.data is not None
        said = self._config.get("feature_scaling")
        mode = str(said or "node")
        if self.data.scaling == mode:
            return True
        combined = None
        if said in ("global", "node") and not self._stats_sent:
            self._report_stats()
        if mode == "global":
            state = self.client.feature_scaling()
            if state.get("status") != "ready":
                logger.info("node %s: waiting for the federation's feature statistics (%s of %s nodes reported)",
                            self.node_id, state.get("reported"), state.get("required"))
                return False
            try:
                combined = Scaling.from_dict(state)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"the server's feature scaling cannot be used: {exc}") from None
        try:
            self.data = node_data_scale(self.raw_data, mode, combined)
        except DataError as exc:
            raise DataMismatch(f"node {self.node_id} cannot take part: {exc}") from None
        self.x, self.y = self.data.x_train, self.data.y_train
        logger.info("node %s: features scaled (%s)", self.node_id, mode)
        return True

    def _report_stats(self) -> None:
        assert self.raw_data is not None
        stats = node_feature_stats(self.raw_data, noise_multiplier=self.stats_noise, clip=self.stats_clip,
                                   rng=self.stats_rng)
        try:
            status, _answer = self.client.report_feature_stats(stats.to_dict())
            logger.info("node %s: feature statistics of %d rows %s", self.node_id, stats.count,
                        "sent" if status == 201 else "already sent")
        except ServerRejected as exc:
            if exc.status in (401, 404):
                raise
            # fixed already (we joined late), or a model of the server's choosing: use what the server has.
            logger.info("node %s: the server did not take our feature statistics: %s", self.node_id, exc.detail)
        self._stats_sent = True

    def fit_round(self, base: NDArrays, config: dict[str, Any], number: int) -> tuple[NDArrays, int, dict[str, float]]:
        """A round's training (nodes_app.training, the code `simulate` runs too) and the metrics to upload."""
        self._config = {**DEFAULT_CONFIG, **config}
        seed = shuffle_seed(self.run_seed, self.node_number, number)
        if self.data is None:
            before, after, new = self._train(base, self.x, self.y, seed)
            metrics = {"loss": after, "loss_before": before}
        else:
            new, metrics = fit_and_evaluate(self.spec, base, self.data, self._config, seed)
        return new, len(self.x), metrics

    def _train(self, base: NDArrays, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, NDArrays]:
        return fit(self.spec, base, x, y, self._config, seed)
