"""Selectors read: the shapes the API, the dashboard and long-polls serve, and what services look up."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypedDict

from django.conf import settings
from django.db.models import Count, Max, QuerySet

from aggregation.fl import NDArrays
from aggregation.fl.manifest import ModelSpec, spec_from_dict, spec_pending
from aggregation.fl.metrics import stop_condition_holds
from aggregation.fl.registry import strategy_create
from aggregation.fl.serde import params_loads
from aggregation.models import Experiment, ModelVersion, Round
from fedsite.errors import ApplicationError

SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class UpdateCount(TypedDict):
    num_updates: int


def experiment_list() -> QuerySet[Experiment]:
    return Experiment.objects.all()


def experiment_get(name: str | None) -> Experiment:
    """The named experiment, or the default one (created by `migrate` and at server start, never by a read)."""
    # Names are slugs: anything else names no experiment and never reaches the database.
    experiment = (Experiment.objects.filter(name=name or settings.FL_EXPERIMENT).first()
                  if not name or SLUG.fullmatch(name) else None)
    if experiment is None:
        if not name:
            raise ApplicationError("no_experiment", f"The default experiment {settings.FL_EXPERIMENT!r} does not "
                                   "exist yet; it is created by 'python manage.py migrate' and at server start.", 404)
        raise ApplicationError("unknown_experiment", f"There is no experiment named {name!r}.", 404)
    return experiment


def experiment_spec(experiment: Experiment) -> ModelSpec:
    """The experiment's model: the built-in MLP or the manifest of a user's tensors."""
    if experiment.status == Experiment.Status.INITIALIZING:
        raise ApplicationError("not_initialized", f"Experiment {experiment.name!r} is waiting for its initial "
                               "model, which the first node to connect will provide.", 409)
    if spec_pending(experiment.model_spec):  # stopped before any node gave its model
        raise ApplicationError("not_initialized", f"Experiment {experiment.name!r} has no model: it ended before "
                               "a node provided the initial parameters.", 409)
    return _spec_parsed(json.dumps(experiment.model_spec, sort_keys=True))


@lru_cache(maxsize=64)
def _spec_parsed(text: str) -> ModelSpec:
    """A model spec parsed and validated once per process: uploads and aggregations ask for it every time."""
    return spec_from_dict(json.loads(text))


def experiment_public_params(params: object) -> object:
    """strategy_params as shown to clients: without the DP noise seed (knowing it would undo the noise)."""
    if isinstance(params, dict) and isinstance(params.get("dp"), dict) and "seed" in params["dp"]:
        return {**params, "dp": {k: v for k, v in params["dp"].items() if k != "seed"}}
    return params


# Reads that only need a version's metadata never load its parameter blob (megabytes per row).
BLOBS = ("parameters", "strategy_state")
# ...nor the parent link, which SQLite stores after the blobs (see migration 0006): reading it walks them.
BEHIND_BLOBS = (*BLOBS, "parent")


def _rounds_with_versions(experiment: Experiment) -> Any:
    """Rounds with their base and produced versions' metadata; the versions' blobs stay in the database."""
    deferred = [f"{relation}__{name}" for relation in ("base_version", "produced_version") for name in BEHIND_BLOBS]
    return experiment.rounds.select_related("base_version", "produced_version").defer(*deferred)


def round_current(experiment: Experiment) -> Round | None:
    return (experiment.rounds.select_related("base_version").defer(*(f"base_version__{f}" for f in BEHIND_BLOBS))
            .order_by("-number").first())


def model_version_latest(experiment: Experiment) -> ModelVersion:
    """The newest version's metadata; its parameters come from version_blob."""
    latest = _versions(experiment).order_by("-version").first()
    if latest is None:  # an experiment waiting for its first node's parameters has no version 0 yet
        raise ApplicationError("no_model", f"Experiment {experiment.name!r} has no model yet: it is waiting for the "
                               "first node to provide the initial parameters.", 404)
    return latest


def _versions(experiment: Experiment) -> Any:
    """Versions with their parent and round, no blob loaded (the parent's neither)."""
    return (experiment.versions.select_related("parent", "round")
            .defer(*BLOBS, *(f"parent__{name}" for name in BEHIND_BLOBS)))


# Per process: the base model of each running experiment's round, and the latest version downloaded.
VERSION_CACHE_SIZE = 4


@lru_cache(maxsize=VERSION_CACHE_SIZE)
def version_blob(version_id: int, sha256: str) -> bytes:
    """A model version's safetensors bytes, read from the database once per process.

    Versions never change, and each round all N nodes download the same one and every upload is
    measured against it: one read instead of N. Keyed by the digest too, so a reused id cannot
    serve stale bytes.
    """
    return bytes(ModelVersion.objects.filter(pk=version_id).values_list("parameters", flat=True).get())


@lru_cache(maxsize=VERSION_CACHE_SIZE)
def version_parameters(version_id: int, sha256: str) -> NDArrays:
    """A model version's parameters (read-only arrays over version_blob's bytes), decoded once per process."""
    experiment = Experiment.objects.get(versions__pk=version_id)
    params, _ = params_loads(experiment_spec(experiment), version_blob(version_id, sha256))
    for layer in params:
        layer.flags.writeable = False
    return params


def round_marker(experiment: Experiment) -> tuple[int, str]:
    """What a long-poll waits to change, in one cheap query: (current round number, run status)."""
    rows = Experiment.objects.filter(pk=experiment.pk).values("status").annotate(n=Max("rounds__number")).order_by()
    row = next(iter(rows[:1]), None)
    return (row["n"] or 0, row["status"]) if row else (0, "")


def model_version_get(experiment: Experiment, version: str | int) -> ModelVersion:
    """A version's metadata by number or 'latest'; its bytes come from version_blob."""
    if version == "latest":
        return model_version_latest(experiment)
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise ApplicationError("bad_version", f"{version!r} is not a model version number or 'latest'.") from None
    found = _versions(experiment).filter(version=number).first()
    if found is None:
        latest = experiment.versions.aggregate(n=Max("version"))["n"]
        raise ApplicationError("unknown_version", f"Model version {number} does not exist; the latest is {latest}.",
                               404)
    return found


def round_number_current(experiment: Experiment) -> int:
    """The highest round number of `experiment` (0 before its first round)."""
    latest = experiment.rounds.order_by("-number").values_list("number", flat=True).first()
    return latest or 0


def round_unknown(experiment: Experiment, round_number: int) -> ApplicationError:
    """The 404 for an upload to a round that does not exist, with the round to use instead."""
    current = round_number_current(experiment)
    return ApplicationError("unknown_round", f"Round {round_number} does not exist; the current round is {current}.",
                            404, current_round=current)


def round_base_parameters(experiment: Experiment, round_number: int) -> NDArrays | None:
    """The parameters of round `round_number`'s base model (read-only, shared), or None if no such round."""
    row = (ModelVersion.objects.filter(rounds_based_on__experiment=experiment, rounds_based_on__number=round_number)
           .values_list("pk", "sha256").first())
    return None if row is None else version_parameters(*row)


def stop_condition_reason(experiment: Experiment, rnd: Round, metrics: dict[str, object]) -> str:
    """A sentence if the experiment's stop condition holds with this round's `metrics`, else ""."""
    if not experiment.stop_metric or experiment.stop_threshold is None:
        return ""
    patience = max(1, experiment.stop_patience)
    earlier = (experiment.rounds.filter(status=Round.Status.CLOSED, number__lt=rnd.number)
               .order_by("-number").values_list("metrics", flat=True)[: patience - 1])
    values = [m.get(experiment.stop_metric) for m in reversed(list(earlier))]
    values.append(metrics.get(experiment.stop_metric))
    if not stop_condition_holds(values, experiment.stop_op, experiment.stop_threshold, patience):
        return ""
    streak = "" if patience == 1 else f" for {patience} rounds in a row"
    return (f"stopped early at round {rnd.number}: {experiment.stop_metric} {experiment.stop_op} "
            f"{experiment.stop_threshold:g}{streak}")


def round_config(experiment: Experiment, rnd: Round | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "epochs": experiment.epochs,
        "learning_rate": experiment.learning_rate,
        "batch_size": experiment.batch_size,
    }
    if experiment.update_encoding != "none":  # absent means float32 uploads, as before compression existed
        config["update_encoding"] = experiment.update_encoding
    if experiment.model_spec.get("kind", "mlp") == "mlp":  # the built-in data pipeline's scaling (GET /api/features)
        config["feature_scaling"] = experiment.feature_scaling
    if rnd is not None:
        config.update(strategy_create(experiment.strategy, experiment.strategy_params).configure_fit(rnd.number))
    return config


def round_state(experiment: Experiment) -> dict[str, Any]:
    """What a node needs to know about the current round; also the long-poll's answer."""
    rnd = round_current(experiment)
    latest = experiment.versions.order_by("-version").values_list("version", flat=True).first()
    # Arrival order by id: the (round, node) index answers it without reading the rows.
    nodes = list(rnd.updates.order_by("id").values_list("node__node_id", flat=True)) if rnd else []
    return {
        "experiment": experiment.name,
        "number": rnd.number if rnd else 0,
        "status": rnd.status if rnd else "none",
        "model_version": rnd.base_version.version if rnd else latest,
        "deadline": rnd.deadline.isoformat() if rnd else None,
        "config": round_config(experiment, rnd),
        "progress": {
            "received": len(nodes),
            "required": experiment.total_nodes,
            "min_nodes": experiment.min_nodes,
            "nodes": nodes,
        },
        "run": {"status": experiment.status, "max_rounds": experiment.max_rounds, "model_version": latest,
                "finish_reason": experiment.finish_reason},
        "model_spec": experiment.model_spec,
        "strategy": experiment.strategy,
    }


def round_summary(rnd: WithAnnotations[Round, UpdateCount]) -> dict[str, Any]:
    produced = getattr(rnd, "produced_version", None)
    duration = (rnd.closed_at - rnd.opened_at).total_seconds() if rnd.closed_at else None
    return {
        "number": rnd.number,
        "status": rnd.status,
        "base_version": rnd.base_version.version,
        "model_version": produced.version if produced else None,
        "opened_at": rnd.opened_at.isoformat(),
        "deadline": rnd.deadline.isoformat(),
        "closed_at": rnd.closed_at.isoformat() if rnd.closed_at else None,
        "duration_s": duration,
        "updates": rnd.num_updates,
        "metrics": rnd.metrics,
        "failure_reason": rnd.failure_reason,
        "node_failures": rnd.node_failures,
    }


def round_detail(experiment: Experiment, number: int) -> dict[str, Any]:
    rnd = _rounds_with_versions(experiment).annotate(num_updates=Count("updates")).filter(number=number).first()
    if rnd is None:
        raise ApplicationError("unknown_round", f"Round {number} does not exist.", 404)
    updates = rnd.updates.select_related("node").defer("parameters").order_by("id")
    return {**round_summary(rnd), "updates": [
        {"node_id": u.node.node_id, "num_examples": u.num_examples, "metrics": u.metrics, "sha256": u.sha256,
         "size": u.size, "delta_norm": u.delta_norm, "rejected_reason": u.rejected_reason or None,
         "received_at": u.received_at.isoformat()}
        for u in updates
    ]}


def rounds_history(experiment: Experiment, limit: int = 1000) -> list[dict[str, Any]]:
    rounds = _rounds_with_versions(experiment).annotate(num_updates=Count("updates")).order_by("-number")[:limit]
    return [round_summary(r) for r in reversed(list(rounds))]


def feature_scaling_state(experiment: Experiment) -> dict[str, object]:
    """What GET /api/features answers: the mode, whether the scaling is fixed, and the scaling when it is."""
    state: dict[str, object] = {"experiment": experiment.name, "scaling": experiment.feature_scaling}
    if experiment.feature_scaling == "range":
        return {**state, "status": "local"}  # every party applies the data set's fixed range itself
    if experiment.feature_stats:
        return {**state, "status": "ready", **experiment.feature_stats}
    return {**state, "status": "collecting", "reported": experiment.feature_reports.count(),
            "required": experiment.total_nodes}
