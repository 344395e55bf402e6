"""The round lifecycle: open a round, aggregate it into the next model version, or fail it.
Handing a round over to the aggregation task is services/handover.py: the task calls round_aggregate."""
import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from aggregation import events
from aggregation.fl import NDArrays
from aggregation.fl.aggregate import MeanAccumulator
from aggregation.fl.guard import capped_examples, outlier_reasons
from aggregation.fl.registry import strategy_create
from aggregation.fl.serde import SerdeError, check_finite, dumps, loads, params_dumps, params_loads, sha256_hex
from aggregation.fl.strategy import AggregationError, FitRes, Strategy
from aggregation.fl.validation import validate_update
from aggregation.models import Experiment, ModelVersion, Round, Update
from aggregation.selectors import experiment_spec, stop_condition_reason
from aggregation.services.evaluation import round_server_evaluate
from aggregation.services.versions import version_metadata

logger = logging.getLogger("fedsite.rounds")


def round_open(experiment: Experiment, base_version: ModelVersion, *, number: int | None = None) -> Round:
    """Open the next round on `base_version`. Call inside a transaction."""
    if number is None:
        number = (experiment.rounds.aggregate(n=Max("number"))["n"] or 0) + 1
    rnd = Round.objects.create(
        experiment=experiment,
        number=number,
        base_version=base_version,
        deadline=timezone.now() + timedelta(seconds=experiment.round_timeout_s),
    )
    logger.info("[%s] round %d open on model v%d", experiment.name, number, base_version.version)
    events.event_send("round.opened", experiment, {"round": number, "model_version": base_version.version})
    return rnd


def failed_nodes_reason(rnd: Round, received: int) -> str:
    listed = "; ".join(f"node {node}: {reason}" for node, reason in sorted(rnd.node_failures.items()))
    return (f"{received} of the {rnd.experiment.min_nodes} updates needed; {len(rnd.node_failures)} node(s) could "
            f"not train on model v{rnd.base_version.version} ({listed})")


def _next_version_number(experiment: Experiment) -> int:
    return (experiment.versions.aggregate(n=Max("version"))["n"] or 0) + 1


def _finish_or_continue(experiment: Experiment, base: ModelVersion, stop_reason: str = "") -> None:
    """Finish the run (max_rounds reached, or `stop_reason` from the stop condition) or open the next round."""
    # The run's status now, locked after the round (the order lifecycle actions take too): an operator may
    # have stopped the run while this round aggregated, and a stopped run gets no new round.
    experiment.status = (Experiment.objects.select_for_update().filter(pk=experiment.pk)
                         .values_list("status", flat=True).get())
    if experiment.status != Experiment.Status.RUNNING:
        return
    versions_made = base.version
    if not stop_reason and experiment.max_rounds and versions_made >= experiment.max_rounds:
        stop_reason = f"max_rounds reached ({experiment.max_rounds})"
    if stop_reason:
        Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.FINISHED,
                                                           finish_reason=stop_reason)
        experiment.status, experiment.finish_reason = Experiment.Status.FINISHED, stop_reason
        logger.info("[%s] run finished after %d rounds: %s", experiment.name, versions_made, stop_reason)
        events.event_send("run.finished", experiment, {"model_version": versions_made, "reason": stop_reason})
    else:
        round_open(experiment, base)


def round_fail(rnd: Round, reason: str) -> None:
    """Mark a round failed and retry with a new round on the same model. Call inside a transaction."""
    rnd.status = Round.Status.FAILED
    rnd.closed_at = timezone.now()
    rnd.failure_reason = reason
    rnd.save(update_fields=["status", "closed_at", "failure_reason"])
    logger.warning("[%s] round %d failed: %s", rnd.experiment.name, rnd.number, reason)
    events.event_send("round.failed", rnd.experiment, {"round": rnd.number, "reason": reason})
    _finish_or_continue(rnd.experiment, rnd.base_version)


def _strategy_restored(experiment: Experiment, base: ModelVersion) -> Strategy:
    """The experiment's strategy with the state saved beside the base version (momentum, moments…)."""
    strategy = strategy_create(experiment.strategy, experiment.strategy_params)
    if base.strategy_state:
        state, _ = loads(bytes(base.strategy_state))
        strategy.load_state(state)
    return strategy


BATCH_READ_BYTES = 2 << 20  # a round's blobs up to this total are read at once: memory stays at a few MB


def _checked_updates(experiment: Experiment, names: list[str], current: NDArrays, updates: list[Update],
                     outliers: dict[int, str]) -> Iterator[tuple[Update, NDArrays | None]]:
    """Yield (update, usable parameters) one blob at a time; a rejected update gets its reason recorded.

    `outliers` (by position) are rejected from their stored distance, without reading their blobs.
    """
    spec = experiment_spec(experiment)
    # A round of small updates is read in one query (unsorted, so SQLite does not sort the blobs); otherwise
    # one at a time, so memory stays at a few models. A 10-node round of a small MLP spent 6 ms in ten reads.
    wanted = [u.pk for position, u in enumerate(updates) if position not in outliers]
    together = sum(u.size for u in updates) <= BATCH_READ_BYTES
    blobs = dict(Update.objects.filter(pk__in=wanted).values_list("pk", "parameters")) if together else {}
    for position, update in enumerate(updates):
        reason: str | None
        if position in outliers:
            checked, reason = None, outliers[position]
        else:
            blob = blobs.pop(update.pk, None)
            if blob is None:
                blob = Update.objects.filter(pk=update.pk).values_list("parameters", flat=True).get()
            params, _ = params_loads(spec, blob)
            checked, reason = validate_update(params, current, max_norm=experiment.update_max_norm,
                                              mode=experiment.update_norm_mode, names=names)
        if checked is None:
            update.rejected_reason = reason or "rejected"
            update.save(update_fields=["rejected_reason"])
            logger.warning("[%s] round %d: update from node %s rejected: %s", experiment.name,
                           update.round.number, update.node.node_id, update.rejected_reason)
        yield update, checked


def _fit(strategy: Strategy, experiment: Experiment, rnd: Round, current: NDArrays,
         updates: list) -> tuple[NDArrays | None, dict, list[FitRes], list[str]]:
    """Run the strategy over the round's updates; (new parameters, metrics, accepted results, failures).

    A strategy that only needs the weighted mean (the FedAvg family) gets it accumulated while the
    updates are read one by one, so memory stays at a few models whatever the number of nodes; the
    others receive every update in memory.
    """
    names = experiment_spec(experiment).names()
    outliers = outlier_reasons([u.delta_norm for u in updates], settings.FL_OUTLIER_FACTOR)
    weights = capped_examples([u.num_examples for u in updates], settings.FL_WEIGHT_CAP_FACTOR)
    accumulator = MeanAccumulator(current, sum(weights)) if strategy.streams_mean else None
    results: list[FitRes] = []
    failures: list[str] = []
    for (update, params), weight in zip(_checked_updates(experiment, names, current, updates, outliers), weights):
        if params is None:
            failures.append(f"node {update.node.node_id}: {update.rejected_reason}")
            continue
        if weight < update.num_examples:
            logger.warning("[%s] round %d: node %s claims %d examples; weighted as %d (FL_WEIGHT_CAP_FACTOR x the "
                           "median)", experiment.name, rnd.number, update.node.node_id, update.num_examples, weight)
        if accumulator is not None:
            accumulator.add(params, weight)
            params = []
        results.append(FitRes(params, weight, update.metrics))
    if not results:
        return None, {}, results, failures
    # Overflow to inf is caught by round_aggregate's finiteness check, which keeps the model: not a crash.
    with np.errstate(over="ignore", invalid="ignore"):
        if accumulator is not None:
            new, metrics = strategy.aggregate_mean(rnd.number, current, accumulator.mean(), results, failures)
        else:
            new, metrics = strategy.aggregate_fit(rnd.number, current, results, failures)
    return new, metrics, results, failures


def round_aggregate(round_id: int) -> bool:
    """Aggregate an `aggregating` round into the next model version; idempotent (False = nothing to do)."""
    started = time.monotonic()
    with transaction.atomic():
        rnd = Round.objects.select_for_update().select_related("experiment", "base_version").filter(pk=round_id).first()
        if rnd is None or rnd.status != Round.Status.AGGREGATING:
            return False
        experiment = rnd.experiment
        spec = experiment_spec(experiment)
        # Metadata first, blobs one at a time: sorting rows with their blobs cost SQLite seconds.
        updates = list(rnd.updates.select_related("node", "round").defer("parameters").order_by("node__node_id"))
        try:
            current, _ = params_loads(spec, bytes(rnd.base_version.parameters))
            strategy = _strategy_restored(experiment, rnd.base_version)
            new_params, metrics, results, failures = _fit(strategy, experiment, rnd, current, updates)
            if not results:
                round_fail(rnd, f"all {len(updates)} updates were rejected: {'; '.join(failures)}")
                return True
        except (AggregationError, ValueError) as exc:
            round_fail(rnd, f"aggregation failed: {exc}")
            return True
        if new_params is None:
            new_params = current
        try:
            check_finite(new_params, spec.names())
        except SerdeError as exc:
            # Committing it would stall every node (none can train on it): keep the model, say why.
            round_fail(rnd, f"the aggregate is not finite ({exc}); the previous model is kept")
            return True
        metrics = {**metrics, "rejected": len(failures), **round_server_evaluate(experiment, spec, new_params)}
        stop_reason = stop_condition_reason(experiment, rnd, metrics)
        if stop_reason:
            metrics["stopped_early"] = True  # the round history shows where the run ended early
        state = strategy.state_dict()
        number = _next_version_number(experiment)
        metadata = version_metadata(experiment, spec, number, parent=rnd.base_version.version, round_number=rnd.number)
        blob = params_dumps(spec, new_params, metadata)
        version = ModelVersion.objects.create(
            experiment=experiment,
            version=number,
            parameters=blob,
            sha256=sha256_hex(blob),
            size=len(blob),
            parent=rnd.base_version,
            round=rnd,
            contributors=[
                {"node": u.node.node_id, "sha256": u.sha256, "num_examples": u.num_examples}
                for u in updates if not u.rejected_reason
            ],
            strategy_state=dumps(state) if state else b"",
        )
        rnd.status = Round.Status.CLOSED
        rnd.closed_at = timezone.now()
        rnd.metrics = {**metrics, "aggregation_seconds": round(time.monotonic() - started, 6)}
        rnd.save(update_fields=["status", "closed_at", "metrics"])
        logger.info(
            "[%s] round %d aggregated from %d updates into v%d (loss %s)",
            experiment.name, rnd.number, len(updates), version.version, metrics.get("loss"),
        )
        events.event_send(
            "round.closed",
            experiment,
            {"round": rnd.number, "model_version": version.version, "sha256": version.sha256, "metrics": rnd.metrics},
        )
        _finish_or_continue(experiment, version, stop_reason)
    return True

