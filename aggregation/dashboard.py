"""The dashboard's read side: who may see it, and one snapshot with the round, nodes, charts and global model."""
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from aggregation.models import Experiment, ModelVersion, Update
from aggregation.selectors import BEHIND_BLOBS, experiment_get, round_state, rounds_history, version_parameters
from aggregation.services import experiment_spec
from aggregation.services.experiments import experiment_public_params
from fedsite.readguard import login_required, signed_in
from nodes_app.models import Node

HISTORY_ROUNDS = 200
HISTOGRAM_BINS = 40

# Versions are append-only, so a summary keyed by sha256 never goes stale; the bound keeps memory flat.
_SUMMARY_CACHE_SIZE = 16
_summaries: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
_summaries_lock = threading.Lock()


def dashboard_login_required() -> bool:
    return login_required()


def dashboard_access_allowed(user: Any) -> bool:
    """True when the dashboard is open to everyone, or `user` (Django's or Channels' scope user) is logged in."""
    if not dashboard_login_required():
        return True
    return signed_in(user)


def parameter_summary(names: list[str], params: list[np.ndarray], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Mean, standard deviation and L2 norm per tensor, and one histogram of every parameter.

    One tensor at a time in float64, never all of them concatenated: a large model costs one layer's copy.
    """
    layers: list[dict[str, Any]] = []
    lo, hi = np.inf, -np.inf
    for name, arr in zip(names, params, strict=True):
        values = np.asarray(arr, dtype=np.float64).ravel()
        layers.append({"name": name, "shape": list(np.shape(arr)), "count": int(values.size),
                       "mean": float(values.mean()) if values.size else 0.0,
                       "std": float(values.std()) if values.size else 0.0,
                       "norm": float(np.linalg.norm(values))})
        if values.size:
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    counts: Any  # an array: the sum of per-tensor histograms (sum() is typed as possibly its start, 0)
    edges, counts = np.zeros(0), np.zeros(0, dtype=np.int64)
    if lo <= hi:  # at least one parameter
        edges = np.histogram_bin_edges([lo, hi], bins=bins)
        counts = sum(np.histogram(np.asarray(arr, dtype=np.float64), bins=edges)[0] for arr in params)
    return {
        "layers": layers,
        "count": sum(layer["count"] for layer in layers),
        "norm": math.sqrt(sum(layer["norm"] ** 2 for layer in layers)),
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def model_summary(experiment: Experiment, version: ModelVersion) -> dict[str, Any]:
    """The parameter summary of `version`, computed once per distinct model and then served from memory."""
    with _summaries_lock:
        cached = _summaries.get(version.sha256)
        if cached is not None:
            _summaries.move_to_end(version.sha256)
            return cached
    params = version_parameters(version.pk, version.sha256)
    summary = parameter_summary(experiment_spec(experiment).names(), params)
    with _summaries_lock:
        _summaries[version.sha256] = summary
        while len(_summaries) > _SUMMARY_CACHE_SIZE:
            _summaries.popitem(last=False)
    return summary


def _numeric(value: Any) -> float | None:
    """A finite float for the charts, or None for anything else a node may have put in its metrics."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def charts_data(experiment: Experiment, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Series aligned on the round numbers of `rounds`: the model metrics, and each node's update norm and loss.

    A round metric is charted when nodes report it (loss, evaluation metrics); what the server adds to a
    round's metrics (counts of updates, examples, rejections, timing) is left to the history table.
    """
    numbers = [r["number"] for r in rounds]
    index = {n: i for i, n in enumerate(numbers)}
    nodes: dict[str, dict[str, list[float | None]]] = {}
    reported: set[str] = set()
    if numbers:
        updates = (Update.objects.filter(round__experiment=experiment, round__number__gte=numbers[0])
                   .order_by("round__number", "node__node_id")
                   .values_list("round__number", "node__node_id", "delta_norm", "metrics"))
        for number, node_id, delta_norm, metrics in updates:
            if number not in index:
                continue
            metrics = metrics if isinstance(metrics, dict) else {}
            reported.update(metrics)
            series = nodes.setdefault(node_id, {"delta_norm": [None] * len(numbers), "loss": [None] * len(numbers)})
            series["delta_norm"][index[number]] = _numeric(delta_norm)
            series["loss"][index[number]] = _numeric(metrics.get("loss"))
    closed = [r["metrics"] if r["status"] == "closed" and isinstance(r["metrics"], dict) else {} for r in rounds]
    names = sorted({k for m in closed for k, v in m.items()
                    if (k in reported or _scored_model_metric(k)) and _numeric(v) is not None})
    round_metrics = {name: [_numeric(m.get(name)) for m in closed] for name in names}
    return {"rounds": numbers, "round_metrics": round_metrics, "nodes": nodes, "groups": metric_groups(round_metrics)}


def _scored_model_metric(name: str) -> bool:
    """A score of the new model: on the server's test set (test_*) or federated on the nodes (federated_*)."""
    return name.startswith(("test_", "federated_")) and not name.endswith(("_examples", "_nodes"))


# Scores between 0 and 1 share one axis; losses (any scale, often better on a log axis) another.
_FRACTION_WORDS = ("accuracy", "precision", "recall", "f1", "auc")
# The model's score on data no node trained on comes first: that is the number a run is judged by.
_SCOPE_ORDER = ("test_", "federated_", "val_")


def _metric_order(name: str) -> tuple[int, str]:
    if name == "loss":  # the weighted training loss
        return (-1, name)
    return next((i for i, scope in enumerate(_SCOPE_ORDER) if name.startswith(scope)), len(_SCOPE_ORDER)), name


def metric_groups(round_metrics: dict[str, list[float | None]]) -> dict[str, list[str]]:
    """The chart each round metric belongs on: `fraction` (0 to 1: accuracies), `loss`, or `other`."""
    groups: dict[str, list[str]] = {"fraction": [], "loss": [], "other": []}
    for name, values in round_metrics.items():
        within = all(v is None or 0.0 <= v <= 1.0 for v in values)
        if "loss" in name:
            groups["loss"].append(name)
        elif within and any(word in name for word in _FRACTION_WORDS):
            groups["fraction"].append(name)
        else:
            groups["other"].append(name)
    return {group: sorted(names, key=_metric_order) for group, names in groups.items()}


def strategy_settings(name: str, params: Any) -> dict[str, Any]:
    """The strategy's hyperparameters as it runs: the defaults of its constructor, then what the experiment set."""
    import inspect

    from aggregation.fl.registry import STRATEGIES

    given = experiment_public_params(params)
    given = given if isinstance(given, dict) else {}
    cls = STRATEGIES.get(name)
    defaults: dict[str, Any] = {}
    if cls is not None:
        for parameter in inspect.signature(cls.__init__).parameters.values():
            value = parameter.default
            if parameter.kind is parameter.KEYWORD_ONLY and (value is None or isinstance(value, int | float | str)):
                defaults[parameter.name] = value
    return {**defaults, **given}


_RUN_OVER: tuple[str, ...] = (Experiment.Status.FINISHED, Experiment.Status.STOPPED)
# The node's experiment is joined for its name only, not its manifest or hyperparameters.
_EXPERIMENT_BLOBS = ("experiment__model_spec", "experiment__strategy_params")


def nodes_table(experiment: Experiment | None = None) -> list[dict[str, Any]]:
    """The nodes of `experiment` with their last round and update count in it (every node, all rounds, when None).

    A node belongs to an experiment it uploaded to or last polled; one that registered and has done nothing yet
    belongs to every experiment. A node that moved on to another experiment is `done` here once this run ended.
    """
    nodes = Node.objects.select_related("experiment").defer(*_EXPERIMENT_BLOBS)
    mine = Q()
    if experiment is not None:
        mine = Q(updates__round__experiment=experiment)
        contributed = Update.objects.filter(round__experiment=experiment).values("node_id")
        idle = Q(experiment__isnull=True) & ~Q(pk__in=Update.objects.values("node_id"))
        nodes = nodes.filter(Q(experiment=experiment) | Q(pk__in=contributed) | idle)
    nodes = nodes.annotate(last_round=Max("updates__round__number", filter=mine), num_updates=Count("updates",
                                                                                                    filter=mine))
    rows = []
    for n in nodes.order_by("node_id"):
        status = n.status
        moved_on = experiment is not None and n.experiment_id not in (None, experiment.pk)
        if moved_on and experiment.status in _RUN_OVER:  # type: ignore[union-attr]  # moved_on says it is not None
            status = "done"
        rows.append({
            "node_id": n.node_id,
            "address": n.address,
            "status": status,
            "last_seen": n.last_seen.isoformat() if n.last_seen else None,
            "last_round": n.last_round,
            "updates": n.num_updates,
            "source": n.source,
            "discovery_alive": n.discovery_alive,
            "experiment": n.experiment.name if n.experiment_id else None,  # type: ignore[union-attr]  # an id: a row
            "done_at": n.done_at.isoformat() if n.done_at else None,
            "data": n.data,
        })
    return rows


def experiments_list() -> list[dict[str, Any]]:
    """Every experiment for the dashboard's switcher: its status, strategy and closed rounds."""
    rows = (Experiment.objects.annotate(closed=Count("rounds", filter=Q(rounds__status="closed")))
            .order_by("name").values("name", "status", "strategy", "closed", "max_rounds"))
    return [{"name": r["name"], "status": r["status"], "strategy": r["strategy"], "rounds": r["closed"],
             "max_rounds": r["max_rounds"]} for r in rows]


def experiment_card(experiment: Experiment, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's parameters: strategy and hyperparameters, training config, and the data its nodes say they hold."""
    partitions = sorted({str(n["data"]["partition"]) for n in nodes if n["data"].get("partition")})
    datasets = sorted({str(n["data"]["data"]) for n in nodes if n["data"].get("data")})
    return {"name": experiment.name, "strategy": experiment.strategy, "status": experiment.status,
            "finish_reason": experiment.finish_reason,
            "strategy_params": strategy_settings(experiment.strategy, experiment.strategy_params),
            "total_nodes": experiment.total_nodes, "min_nodes": experiment.min_nodes,
            "max_rounds": experiment.max_rounds, "round_timeout_s": experiment.round_timeout_s,
            "on_timeout": experiment.on_timeout, "epochs": experiment.epochs,
            "learning_rate": experiment.learning_rate, "batch_size": experiment.batch_size,
            "update_encoding": experiment.update_encoding, "server_eval": experiment.server_eval,
            "partitions": partitions, "datasets": datasets}


def dashboard_snapshot(experiment_name: str | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, in one read."""
    experiment = experiment_get(experiment_name)
    latest = experiment.versions.defer(*BEHIND_BLOBS).order_by("-version").first()
    rounds = rounds_history(experiment, limit=HISTORY_ROUNDS)
    query = "" if experiment_name is None else f"?experiment={experiment.name}"
    nodes = nodes_table(experiment)
    return {
        "server": {"status": "running", "mode": settings.FL_MODE, "now": timezone.now().isoformat()},
        "experiment": experiment_card(experiment, nodes),
        "experiments": experiments_list(),
        "round": round_state(experiment),
        "thresholds": {"stale_s": settings.FL_NODE_STALE_S, "offline_s": settings.FL_NODE_OFFLINE_S},
        "nodes": nodes,
        "rounds": rounds,
        "charts": charts_data(experiment, rounds),
        "model": model_card(experiment, latest, query),
    }


def model_card(experiment: Experiment, latest: ModelVersion | None, query: str) -> dict[str, Any] | None:
    """The latest model's metadata, download links and parameter summary; None while there is no version 0."""
    if latest is None:
        return None
    url = f"/api/models/{latest.version}"
    return {
        "version": latest.version, "sha256": latest.sha256, "size": latest.size,
        "created_at": latest.created_at.isoformat(), "evaluation": latest.evaluation,
        "download": {"safetensors": f"{url}/download{query}",
                     "json": f"{url}/download{query}{'&' if query else '?'}format=json"},
        "summary": model_summary(experiment, latest),
    }
