"""Virtual nodes for `manage.py simulate`. Each trains with the nodes' own training code (nodes_app.training) and
hands its update to the same services an HTTP upload reaches, so rounds, validation, the strategy, server
evaluation and stop conditions run exactly as for real nodes; only HTTP and the token check are skipped."""
import json
import logging
import multiprocessing
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.utils.text import slugify

from aggregation.datasets import BUILTIN, NodeData, node_data_scale, node_feature_stats, nodes_data_load
from aggregation.fl import NDArrays
from aggregation.fl.compression import update_encode
from aggregation.fl.data import synthetic_regression
from aggregation.fl.features import SCALINGS, Scaling
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import params_loads
from aggregation.models import Experiment, Round
from aggregation.parsing import update_from_safetensors
from aggregation.selectors import round_config, round_current
from aggregation.services.experiments import experiment_create
from aggregation.services.features import experiment_scaling, feature_report_submit
from aggregation.services.updates import ParsedUpdate, updates_submit_in_process
from nodes_app.models import Node
from nodes_app.services import node_done, node_issue_token
from nodes_app.training import data_check, fit_and_evaluate, shuffle_seed, worker_fit, worker_init

logger = logging.getLogger("fedsite.simulate")

MAX_NODES = 1000
SYNTHETIC = "synthetic"


@dataclass
class SimulationConfig:
    """One simulated run; every field has a command-line option of the same name."""

    nodes: int = 10
    rounds: int = 20
    data: str = "digits"
    target: str | None = None
    task: str | None = None  # CSV only; bundled sets know their task
    partition: str = "iid"
    seed: int = 0
    strategy: str = "fedavg"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    hidden: tuple[int, ...] = (32,)
    epochs: int = 5
    learning_rate: float = 0.1
    batch_size: int = 32
    val_fraction: float = 0.2
    server_eval: str = "auto"  # auto: a bundled set's held-out test rows; none; or a data source
    stop_metric: str = ""
    stop_op: str = ">="
    stop_threshold: float | None = None
    stop_patience: int = 1
    name: str = ""
    workers: int = 1
    update_encoding: str = "none"  # none | fp16 | int8: how the virtual nodes compress their uploads
    scaling: str = "global"  # global (federated statistics) | node | range: how nodes scale their features


def synthetic_nodes(count: int, samples: int = 100) -> list[NodeData]:
    """The prototype's regression, node i seeded with i (as `runnode --id i` without --data)."""
    nodes = []
    for i in range(1, count + 1):
        x, y = synthetic_regression(i, n=samples)
        nodes.append(NodeData(SYNTHETIC, x, y[:, 0], x[:0], y[:0, 0], "regression", 0, f"synthetic, seed {i}"))
    return nodes


def _blas_single_threaded() -> Any:
    """One BLAS thread in this process until restore_original_limits(); None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return None
    return threadpool_limits(limits=1, user_api="blas")


class Simulation:
    """setup() creates the experiment and the virtual nodes; each step() plays one round to its end."""

    def __init__(self, config: SimulationConfig) -> None:
        if not 1 <= config.nodes <= MAX_NODES:
            raise ValueError(f"the number of nodes must be between 1 and {MAX_NODES}, got {config.nodes}")
        if config.rounds < 1:
            raise ValueError(f"the number of rounds must be at least 1, got {config.rounds}")
        if config.scaling not in SCALINGS:
            raise ValueError(f"unknown feature scaling {config.scaling!r}; choose one of {', '.join(SCALINGS)}")
        self.config = config
        self.scaling: Scaling | None = None  # the federation's combined scaling, once the nodes have reported
        if config.data == SYNTHETIC:
            self.data = synthetic_nodes(config.nodes)
        else:
            self.data = nodes_data_load(config.data, target=config.target, partitioning=config.partition,
                                        num_partitions=config.nodes, seed=config.seed,
                                        val_fraction=config.val_fraction)
        self.spec = self._spec()
        for data in self.data:
            data_check(self.spec, data)
        self.experiment: Experiment | None = None
        self.nodes: list[Node] = []
        self._pool: Executor | None = None
        self._blas_limit: Any = None
        self.uploaded_bytes = self.uploads = 0  # safetensors bodies the virtual nodes "sent"

    def _spec(self) -> MLPSpec:
        first = self.data[0]
        task = first.task or self.config.task or "regression"
        if task == "classification":
            labels = [float(np.max(np.r_[d.y_train, d.y_val], initial=0)) for d in self.data]
            outputs = first.classes or int(max(labels)) + 1
        else:
            outputs = 1
        return MLPSpec((first.features, *self.config.hidden, outputs), task)

    def server_eval(self) -> str:
        chosen = self.config.server_eval
        if chosen == "auto":
            return self.config.data if self.config.data in BUILTIN else ""
        return "" if chosen == "none" else chosen

    def setup(self) -> Experiment:
        cfg = self.config
        name = cfg.name or slugify(f"sim {cfg.data.rsplit('/', 1)[-1]} {cfg.partition} {cfg.strategy} "
                                   f"{secrets.token_hex(3)}")[:64]
        self.experiment = experiment_create(
            name=name, model_spec=self.spec.to_dict(), strategy=cfg.strategy, strategy_params=cfg.strategy_params,
            total_nodes=cfg.nodes, min_nodes=cfg.nodes, max_rounds=cfg.rounds, epochs=cfg.epochs,
            learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=cfg.seed,
            server_eval=self.server_eval(), server_eval_target=cfg.target or "",
            stop_metric=cfg.stop_metric, stop_op=cfg.stop_op, stop_threshold=cfg.stop_threshold,
            stop_patience=cfg.stop_patience, update_encoding=cfg.update_encoding,
            feature_scaling=cfg.scaling,
        )
        # Virtual nodes are ordinary Node rows (ids sim-1..sim-N, reused by later simulations).
        self.nodes = [node_issue_token(f"sim-{i}", rotate=True)[0] for i in range(1, cfg.nodes + 1)]
        for node, data in zip(self.nodes, self.data, strict=True):  # what a real node says when it registers
            Node.objects.filter(pk=node.pk).update(data=data.info, done_at=None)
        if cfg.data != SYNTHETIC:
            self._scale()
        # Thousands of tiny matrix products: BLAS threads only wait for each other (3x slower on 2 busy cores).
        self._blas_limit = _blas_single_threaded()
        if cfg.workers > 1:
            self._pool = ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=worker_init, initargs=(self.data,))
        logger.info("simulation %s: %d virtual nodes, model %s", name, cfg.nodes, self.spec.to_dict())
        return self.experiment

    def _scale(self) -> None:
        """What a runnode with --data does before round 1: report its feature statistics (global, node) through
        the same service as POST /api/features, then scale its rows with the combined or its own statistics."""
        assert self.experiment is not None
        mode = self.config.scaling
        if mode in ("global", "node"):
            for node, data in zip(self.nodes, self.data):
                feature_report_submit(experiment=self.experiment, node=node, stats=node_feature_stats(data))
            self.scaling = experiment_scaling(self.experiment)
        self.data = [node_data_scale(d, mode, self.scaling) for d in self.data]

    @property
    def finished(self) -> bool:
        return self.experiment is not None and self.experiment.status != Experiment.Status.RUNNING

    def _train(self, base: NDArrays, config: dict[str, Any], number: int) -> list[tuple[NDArrays, dict]]:
        # Node i shuffles as `runnode --id i --seed S` does: the same update a real node would send.
        seeds = [shuffle_seed(self.config.seed, i, number) for i in range(1, len(self.data) + 1)]
        if self._pool is None:
            return [fit_and_evaluate(self.spec, base, d, config, s) for d, s in zip(self.data, seeds)]
        n = len(self.data)
        spec = self.spec.to_dict()
        return list(self._pool.map(worker_fit, range(n), [spec] * n, [base] * n, [config] * n, seeds,
                                   chunksize=max(1, n // (4 * self.config.workers))))

    def step(self, timeout: float = 600.0, on_submit: Callable[[int], object] | None = None) -> Round:
        """Train every virtual node on the open round's model, submit the updates, and wait for the round to end.

        In the embedded mode the last submit aggregates in this process (eager Celery, on commit); in the
        scaled mode a Celery worker does, and this waits for it. `on_submit(k)` is called after the k-th upload.
        """
        if self.experiment is None:
            raise RuntimeError("call setup() first")
        rnd = round_current(self.experiment)
        if rnd is None or rnd.status != Round.Status.OPEN:
            raise RuntimeError(f"no open round in {self.experiment.name}; the run is {self.experiment.status}")
        base, _ = params_loads(self.spec, bytes(rnd.base_version.parameters))
        base = [np.array(p, dtype=np.float32) for p in base]
        config = round_config(self.experiment, rnd)
        results = self._train(base, config, rnd.number)
        updates = []
        for k, (node, data, (params, metrics)) in enumerate(zip(self.nodes, self.data, results), start=1):
            updates.append((node, self._wire(base, params, len(data.y_train), metrics,
                                             config.get("update_encoding", "none"))))
            if on_submit is not None:
                on_submit(k)
        # All of a round's uploads in one transaction; the last one settles the round as N uploads would.
        updates_submit_in_process(experiment=self.experiment, round_number=rnd.number, base=base, updates=updates)
        deadline = time.monotonic() + timeout
        while True:
            rnd.refresh_from_db()
            if rnd.status in (Round.Status.CLOSED, Round.Status.FAILED) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.experiment.refresh_from_db()
        return rnd

    def _wire(self, base: NDArrays, params: NDArrays, num_examples: int, metrics: dict[str, float],
              encoding: str) -> ParsedUpdate:
        """The upload a real node would send (safetensors in the round's encoding), decoded as the server does."""
        metadata = {"num_examples": str(num_examples), "metrics": json.dumps(metrics)}
        body = update_encode(self.spec, params, base, encoding, metadata)
        self.uploaded_bytes += len(body)
        self.uploads += 1
        if encoding == "none":
            # float32 parameters arrive exactly as they left: the body is stored as sent, nothing to decode.
            return ParsedUpdate([np.asarray(p, dtype=np.float32) for p in params], num_examples, dict(metrics),
                                raw=body)
        return update_from_safetensors(self.spec, body, base=lambda: base)

    def close(self) -> None:
        if self.experiment is not None and self.finished:  # as real nodes do when their run has ended
            for node in self.nodes:
                node_done(node, self.experiment)
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
