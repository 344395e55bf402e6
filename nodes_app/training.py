"""One node's local work for a round, shared by runnode and `manage.py simulate`: check the data fits the
model, train, then measure the training loss and the validation metrics. No Django here."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggregation.datasets import NodeData
from aggregation.fl import NDArrays
from aggregation.fl.metrics import evaluate
from aggregation.fl.model import MLPSpec, loss, targets, train
from aggregation.fl.serde import check_finite

DEFAULT_CONFIG: dict[str, Any] = {"epochs": 10, "learning_rate": 0.01, "batch_size": 0}


class DataMismatch(ValueError):
    """The node's data cannot train the experiment's model (features, task or classes); the text says why."""


def data_check(spec: MLPSpec, data: NodeData) -> None:
    """Refuse, with a sentence, data whose shape or labels do not fit `spec`, before any training."""
    model = (f"the experiment's model is a {spec.task} MLP {list(spec.layers)}"
             + (f" with {spec.classes} classes" if spec.classes else ""))
    if data.features != spec.layers[0]:
        raise DataMismatch(f"{data.name} has {data.features} features but {model}, which takes "
                           f"{spec.layers[0]} inputs")
    if data.task is not None and data.task != spec.task:
        raise DataMismatch(f"{data.name} is a {data.task} data set but {model}")
    if spec.task == "classification" and data.classes > spec.classes:
        raise DataMismatch(f"{data.name} has {data.classes} classes but {model}")
    for rows, y in (("training", data.y_train), ("validation", data.y_val)):
        if len(y):
            try:
                targets(spec, y, len(y))
            except ValueError as exc:
                raise DataMismatch(f"the {rows} targets of {data.name} do not fit: {exc}; {model}") from None


def shuffle_seed(seed: int, node: int, round_number: int) -> int:
    """The seed of a node's minibatch shuffles in a round: one independent stream per (run seed, node, round),
    so no node replays another's stream of an earlier round, and a run's seed changes every shuffle."""
    return int(np.random.SeedSequence([seed % 2**63, node % 2**63, round_number]).generate_state(1)[0])


def fit(spec: MLPSpec, base: NDArrays, x: np.ndarray, y: np.ndarray, config: dict[str, Any],
        seed: int) -> tuple[float, float, NDArrays]:
    """Train from `base` with a round's config; returns (loss before, loss after, new parameters)."""
    cfg = {**DEFAULT_CONFIG, **config}
    before = loss(spec, base, x, y)
    # FedProx: the server sends proximal_mu; the proximal term pulls towards the round's model.
    new, after = train(spec, base, x, y, epochs=int(cfg["epochs"]), learning_rate=float(cfg["learning_rate"]),
                       batch_size=int(cfg["batch_size"]), seed=seed % 2**32,
                       proximal_mu=float(cfg.get("proximal_mu", 0.0)), global_params=base)
    check_finite(new, spec.names())
    return before, after, new


def fit_and_evaluate(spec: MLPSpec, base: NDArrays, data: NodeData, config: dict[str, Any],
                     seed: int) -> tuple[NDArrays, dict[str, float]]:
    """A round's work on real data: new parameters and the metrics uploaded with them.

    loss / loss_before: training loss after / before; val_loss and, for a classifier, val_accuracy on
    the node's validation rows (left out when the node has none).
    """
    before, after, new = fit(spec, base, data.x_train, data.y_train, config, seed)
    metrics = {"loss": after, "loss_before": before}
    if len(data.y_val):
        metrics.update({f"val_{k}": v for k, v in evaluate(spec, new, data.x_val, data.y_val).items()})
    return new, metrics


# --- worker processes for `manage.py simulate --workers K` (spawned: they import no Django) -------------
_worker_nodes: list[NodeData] = []


def worker_init(nodes: list[NodeData]) -> None:
    """Keep every virtual node's data in this worker, so a task only carries the model; one BLAS thread per
    worker (the workers are the parallelism; BLAS threads on tiny products only wait for each other)."""
    _worker_nodes[:] = nodes
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


def worker_fit(index: int, spec: dict[str, Any], base: NDArrays, config: dict[str, Any],
               seed: int) -> tuple[NDArrays, dict[str, float]]:
    """fit_and_evaluate for virtual node `index` (0-based) in a worker process."""
    return fit_and_evaluate(MLPSpec.from_dict(spec), base, _worker_nodes[index], config, seed)
