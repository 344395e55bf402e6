"""Accepting a node's update for a round: validate, store once, close the round when it is full."""
import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from aggregation import events
from aggregation.fl import NDArrays
from aggregation.fl.serde import SerdeError, check_finite, params_dumps, params_sha256
from aggregation.fl.validation import delta_norm
from aggregation.models import Experiment, Round, Update
from aggregation.selectors import experiment_spec, round_base_parameters, round_number_current, round_unknown
from aggregation.services.handover import round_settle_if_answered
from fedsite.errors import ApplicationError
from nodes_app.models import Node

logger = logging.getLogger("fedsite.updates")


@dataclass
class ParsedUpdate:
    """An upload decoded from JSON or safetensors, not yet validated against the experiment."""

    parameters: NDArrays
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    # The request body when it already is float32 safetensors: stored as it came, with no re-encoding.
    raw: bytes | None = None


def _validate(experiment: Experiment, update: ParsedUpdate) -> bytes:
    spec = experiment_spec(experiment)
    names, shapes = spec.names(), spec.shapes()
    if len(update.parameters) != len(names):
        raise ApplicationError(
            "wrong_shape", f"The model has {len(names)} tensors ({', '.join(names)}), the update has "
            f"{len(update.parameters)}."
        )
    for name, shape, array in zip(names, shapes, update.parameters):
        if tuple(array.shape) != tuple(shape):
            raise ApplicationError(
                "wrong_shape", f"Tensor '{name}' must have shape {list(shape)}, the update has {list(array.shape)}."
            )
    try:
        check_finite(update.parameters, names)
    except SerdeError as exc:
        raise ApplicationError("not_finite", f"The update is rejected: {exc}.") from None
    if update.num_examples < 1:
        raise ApplicationError("bad_num_examples", "num_examples must be a whole number of at least 1.")
    return update.raw if update.raw is not None else params_dumps(spec, update.parameters)


def _prepared(experiment: Experiment, update: ParsedUpdate, base: NDArrays | None) -> tuple[bytes, str, float | None]:
    """(stored bytes, digest, distance from the round's model) of a valid update; ApplicationError otherwise."""
    blob = _validate(experiment, update)
    # The digest identifies the parameters (their canonical encoding), whatever form they came in.
    digest = params_sha256(experiment_spec(experiment), update.parameters)
    return blob, digest, delta_norm(update.parameters, base) if base is not None else None


def _duplicate(node: Node, round_number: int, current: int) -> ApplicationError:
    return ApplicationError(
        "duplicate_update", f"Node {node.node_id} already uploaded a different update for round {round_number}; "
        "one update per node and round is accepted.", 409, current_round=current,
    )


def _closed(rnd: Round, current: int) -> ApplicationError:
    return ApplicationError("round_closed", f"Round {rnd.number} is {rnd.status} and takes no more updates; "
                            f"the current round is {current}.", 409, current_round=current)


def update_submit(
    *, experiment: Experiment, round_number: int, node: Node, update: ParsedUpdate
) -> tuple[Update, bool]:
    """Store `node`'s update for round `round_number`; returns (update, created).

    A repeat of an identical update is answered with the stored one (created=False); a
    different second update from the same node for the same round is a conflict.
    """
    # A round's base model never changes, so its distance is measured before taking the lock:
    # reading a model-sized blob inside the write transaction held every other upload back.
    blob, digest, norm = _prepared(experiment, update, round_base_parameters(experiment, round_number))
    with transaction.atomic():
        # The row lock serialises uploads to one round (PostgreSQL); SQLite's IMMEDIATE
        # transactions serialise all writers anyway.
        rnd = Round.objects.select_for_update().filter(experiment=experiment, number=round_number).first()
        current = round_number_current(experiment)
        if rnd is None:
            raise round_unknown(experiment, round_number)
        rnd.experiment = experiment  # settling the round reads it: no second query
        existing = rnd.updates.filter(node=node).defer("parameters").first()
        if existing is not None:
            if existing.sha256 == digest and existing.num_examples == update.num_examples:
                return existing, False
            raise _duplicate(node, round_number, current)
        if rnd.status != Round.Status.OPEN:
            raise _closed(rnd, current)
        if node.node_id in rnd.node_failures:  # it could train after all (a retry): its update counts instead
            rnd.node_failures = {k: v for k, v in rnd.node_failures.items() if k != node.node_id}
            rnd.save(update_fields=["node_failures"])
        stored = Update.objects.create(
            round=rnd, node=node, parameters=blob, num_examples=update.num_examples,
            metrics=update.metrics, sha256=digest, size=len(blob),
            delta_norm=norm,
        )
        # Training again: whatever run it was done with, it is back at work (in this experiment).
        Node.objects.filter(pk=node.pk).update(last_seen=timezone.now(), done_at=None, experiment=experiment)
        received = rnd.updates.count()
        logger.info("[%s] round %d: update from node %s accepted (%d/%d)", experiment.name, rnd.number,
                    node.node_id, received, experiment.total_nodes)
        events.event_send("update.received", experiment, {
            "round": rnd.number, "node": node.node_id, "received": received,
            "required": experiment.total_nodes, "metrics": update.metrics, "delta_norm": stored.delta_norm,
        })
        round_settle_if_answered(rnd, received)
    return stored, True


def updates_submit_in_process(*, experiment: Experiment, round_number: int, base: NDArrays,
                              updates: list[tuple[Node, ParsedUpdate]]) -> int:
    """update_submit for many nodes of one process at once (`manage.py simulate`); returns how many were new.

    The same validation, digests, distances, stored rows, events and round settlement as N uploads, in one
    transaction: what an upload needs per request (its own lock, re-reads of the round and the node, a
    commit, reading the base model back) buys nothing when the uploads are already in this process.
    """
    prepared = [(node, update, *_prepared(experiment, update, base)) for node, update in updates]
    with transaction.atomic():
        rnd = Round.objects.select_for_update().filter(experiment=experiment, number=round_number).first()
        if rnd is None:
            raise round_unknown(experiment, round_number)
        rnd.experiment = experiment
        stored = {node_id: (sha, n) for node_id, sha, n in
                  rnd.updates.filter(node__in=[node for node, *_ in prepared])
                  .values_list("node__node_id", "sha256", "num_examples")}
        new = []
        for node, update, blob, digest, norm in prepared:
            if node.node_id in stored:
                if stored[node.node_id] != (digest, update.num_examples):
                    raise _duplicate(node, round_number, round_number_current(experiment))
                continue
            new.append(Update(round=rnd, node=node, parameters=blob, num_examples=update.num_examples,
                              metrics=update.metrics, sha256=digest, size=len(blob), delta_norm=norm))
        if not new:
            return 0
        if rnd.status != Round.Status.OPEN:
            raise _closed(rnd, round_number_current(experiment))
        if rnd.node_failures:
            retried = {u.node.node_id for u in new}
            rnd.node_failures = {k: v for k, v in rnd.node_failures.items() if k not in retried}
            rnd.save(update_fields=["node_failures"])
        Update.objects.bulk_create(new)
        Node.objects.filter(pk__in=[u.node.pk for u in new]).update(last_seen=timezone.now(), done_at=None,
                                                                   experiment=experiment)
        received = rnd.updates.count()
        logger.info("[%s] round %d: %d updates accepted in-process (%d/%d)", experiment.name, rnd.number, len(new),
                    received, experiment.total_nodes)
        for k, u in enumerate(new, start=received - len(new) + 1):
            events.event_send("update.received", experiment, {
                "round": rnd.number, "node": u.node.node_id, "received": k, "required": experiment.total_nodes,
                "metrics": u.metrics, "delta_norm": u.delta_norm,
            })
        round_settle_if_answered(rnd, received)
    return len(new)


MAX_REASON_CHARS = 500


def round_failure_report(*, experiment: Experiment, round_number: int, node: Node, reason: str) -> bool:
    """Record that `node` cannot train on round `round_number`'s model; False if it had said so already.

    Without it a round nobody could train for waited forever; with it the round fails at its deadline,
    or at once when every expected node has answered.
    """
    reason = " ".join(str(reason).split())[:MAX_REASON_CHARS] or "no reason given"
    with transaction.atomic():
        rnd = Round.objects.select_for_update().filter(experiment=experiment, number=round_number).first()
        if rnd is None:
            raise round_unknown(experiment, round_number)
        rnd.experiment = experiment
        current = round_number_current(experiment)
        if rnd.status != Round.Status.OPEN:
            raise ApplicationError("round_closed", f"Round {round_number} is {rnd.status}; the current round is "
                                   f"{current}.", 409, current_round=current)
        if rnd.updates.filter(node=node).exists():
            raise ApplicationError("already_uploaded", f"Node {node.node_id} already uploaded an update for round "
                                   f"{round_number}.", 409, current_round=current)
        if rnd.node_failures.get(node.node_id) == reason:
            return False
        rnd.node_failures = {**rnd.node_failures, node.node_id: reason}
        rnd.save(update_fields=["node_failures"])
        Node.objects.filter(pk=node.pk).update(last_seen=timezone.now())
        logger.warning("[%s] round %d: node %s cannot train: %s", experiment.name, round_number, node.node_id, reason)
        events.event_send("round.node_failed", experiment, {"round": round_number, "node": node.node_id,
                                                            "reason": reason})
        round_settle_if_answered(rnd, rnd.updates.count())
    return True
