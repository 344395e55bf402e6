"""What the server learns about each new model: its score on the server's own test set (FL_SERVER_EVAL).
Called by round_aggregate; the data loads lazily. Whether the stop condition holds is a read: selectors."""
import logging
import threading

from django.conf import settings

from aggregation.datasets import Dataset, scaling_for, server_testset_load
from aggregation.fl import NDArrays
from aggregation.fl.manifest import ModelSpec
from aggregation.fl.metrics import evaluate, stop_condition_parse
from aggregation.fl.model import MLPSpec, targets
from aggregation.models import Experiment
from aggregation.services.features import experiment_scaling
from fedsite.errors import ApplicationError

logger = logging.getLogger("fedsite.evaluation")

_testsets: dict[tuple[str, str], Dataset] = {}
_testsets_lock = threading.Lock()
_reported: set[str] = set()


def _testset(source: str, target: str) -> Dataset:
    """The server's test set, loaded once per process (scikit-learn is imported then, and only if asked)."""
    key = (source, target)
    with _testsets_lock:
        if key not in _testsets:
            _testsets[key] = server_testset_load(source, target or None)
        return _testsets[key]


def round_server_evaluate(experiment: Experiment, spec: ModelSpec, params: NDArrays) -> dict[str, float]:
    """test_loss (and test_accuracy for a classifier) of `params` on the experiment's server test set; {} if none.

    The test rows are scaled as the nodes scale theirs (the experiment's feature_scaling: the federation's
    combined statistics, or the data set's fixed range), never with statistics of the test set itself. With
    per-node scaling the server uses the combined statistics: the one scaling every node's is an estimate of.
    A test set that cannot be used is logged once and skipped: it must never stop the federation.
    """
    if not experiment.server_eval:
        return {}
    try:
        if not isinstance(spec, MLPSpec):
            raise ValueError("the server scores only the built-in MLP; a model of your own is scored by its nodes")
        ds = _testset(experiment.server_eval, experiment.server_eval_target)
        if ds.x.shape[1] != spec.layers[0]:
            raise ValueError(f"it has {ds.x.shape[1]} features, the model takes {spec.layers[0]}")
        targets(spec, ds.y, len(ds))
        mode = "range" if experiment.feature_scaling == "range" else "global"
        combined = experiment_scaling(experiment) if mode == "global" else None
        if mode == "global" and combined is None:
            raise ValueError("the nodes have not reported their feature statistics yet, so the scaling they use "
                             "is unknown (GET /api/features)")
        x = scaling_for(mode, ds, combined).apply(ds.x)
        scores = evaluate(spec, params, x, ds.y)
    except (ImportError, OSError, ValueError) as exc:
        message = f"[{experiment.name}] server evaluation on {experiment.server_eval} skipped: {exc}"
        if message not in _reported:
            _reported.add(message)
            logger.error("%s", message)
        return {}
    return {**{f"test_{name}": value for name, value in scores.items()}, "test_examples": len(ds)}


def experiment_learning_defaults() -> dict[str, object]:
    """The default experiment's evaluation and stop fields, from FL_SERVER_EVAL, FL_STOP_WHEN and friends."""
    fields: dict[str, object] = {
        "server_eval": settings.FL_SERVER_EVAL,
        "server_eval_target": settings.FL_SERVER_EVAL_TARGET,
        "stop_patience": settings.FL_STOP_PATIENCE,
    }
    if settings.FL_STOP_WHEN:
        try:
            metric, op, threshold = stop_condition_parse(settings.FL_STOP_WHEN)
        except ValueError as exc:
            raise ApplicationError("bad_configuration", f"FL_STOP_WHEN: {exc}") from None
        fields.update(stop_metric=metric, stop_op=op, stop_threshold=threshold)
    return fields
