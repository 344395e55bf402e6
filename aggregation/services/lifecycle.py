"""An experiment's run after creation: pause, stop, resume (start) it, or reset it to an earlier model version.

One service layer for the admin's actions, `manage.py experiment` and the operator API alike.
"""
import logging

from django.db import transaction
from django.utils import timezone

from aggregation import events
from aggregation.fl.serde import params_dumps, params_loads, sha256_hex
from aggregation.models import Experiment, ModelVersion, Round
from aggregation.selectors import experiment_spec
from aggregation.services.rounds import round_open
from aggregation.services.versions import version_metadata
from fedsite.errors import ApplicationError

logger = logging.getLogger("fedsite.experiments")


def _lock_run(experiment: Experiment) -> tuple[Experiment, Round | None]:
    """Lock the latest round, then the experiment: the order round_aggregate takes them in, so the two queue
    instead of deadlocking (PostgreSQL; SQLite serialises writers anyway). Call inside a transaction."""
    experiment.rounds.select_for_update().order_by("-number").first()
    locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
    # Read again: an aggregation we waited for may have opened the next round before letting go.
    return locked, locked.rounds.select_for_update().order_by("-number").first()


def _supersede(current: Round | None, why: str) -> None:
    """Fail the open round (its updates were for a run that changed) so it takes no more uploads."""
    if current is not None and current.status == Round.Status.AGGREGATING:
        raise ApplicationError("round_aggregating", f"Round {current.number} is being aggregated; try again in a "
                               "moment.", 409)
    if current is not None and current.status == Round.Status.OPEN:
        current.status, current.closed_at, current.failure_reason = Round.Status.FAILED, timezone.now(), why
        current.save(update_fields=["status", "closed_at", "failure_reason"])
        events.event_send("round.failed", current.experiment, {"round": current.number, "reason": why})


def _latest(experiment: Experiment) -> ModelVersion | None:
    return experiment.versions.order_by("-version").first()


def _halt(experiment: Experiment, *, halting: tuple[str, ...], status: str, reason: str, event: str) -> bool:
    """Move a run whose status is in `halting` to `status`: its open round fails with `reason` and takes no more
    updates. False if the run was in another state."""
    with transaction.atomic():
        locked, current = _lock_run(experiment)
        if locked.status not in halting:
            return False
        _supersede(current, reason)
        locked.status, locked.finish_reason = status, reason
        locked.save(update_fields=["status", "finish_reason"])
        latest = _latest(locked)
        events.event_send(event, locked, {"model_version": latest.version if latest else None, "reason": reason})
    experiment.refresh_from_db(fields=["status", "finish_reason"])
    return True


def experiment_stop(experiment: Experiment, reason: str = "stopped by an operator",
                    status: str = Experiment.Status.STOPPED) -> bool:
    """End a running, initializing or paused run now: its open round takes no more updates and nodes finish with
    the latest model. False if it had ended already."""
    S = Experiment.Status
    if not _halt(experiment, halting=(S.RUNNING, S.INITIALIZING, S.PAUSED), status=status, reason=reason,
                 event="run.finished"):
        return False
    logger.info("experiment %s stopped: %s", experiment.name, reason)
    return True


def experiment_pause(experiment: Experiment, by: str = "an operator") -> bool:
    """Hold a running run: its open round takes no more updates and nodes wait (they do not exit) until it is
    resumed, which opens a new round on the latest model. False if it was not running."""
    reason = f"paused by {by}"
    if not _halt(experiment, halting=(Experiment.Status.RUNNING,), status=Experiment.Status.PAUSED, reason=reason,
                 event="run.paused"):
        return False
    logger.info("experiment %s %s", experiment.name, reason)
    return True


def experiment_finish(experiment: Experiment, reason: str) -> bool:
    """The run met its goal outside a round's close (a stop condition on federated evaluation): it is finished."""
    return experiment_stop(experiment, reason, status=Experiment.Status.FINISHED)


def experiment_resume(experiment: Experiment) -> bool:
    """Run a paused or stopped experiment again from its latest model (or from its first node's, if it had none
    yet): `experiment start` is the same.

    A finished run is not resumed: its max_rounds or stop condition would end it again at once; reset it to
    a version, or raise max_rounds first. False if it was running already.
    """
    with transaction.atomic():
        locked, current = _lock_run(experiment)
        if locked.status in (Experiment.Status.RUNNING, Experiment.Status.INITIALIZING):
            return False
        if locked.status == Experiment.Status.FINISHED:
            raise ApplicationError("run_finished", f"Experiment {locked.name!r} finished ({locked.finish_reason}); "
                                   "raise its max_rounds or reset it to a version to train on.", 409)
        latest = _latest(locked)
        locked.status = Experiment.Status.RUNNING if latest else Experiment.Status.INITIALIZING
        locked.finish_reason = ""
        locked.save(update_fields=["status", "finish_reason"])
        if latest is not None:
            _supersede(current, "superseded when the run was resumed")
            round_open(locked, latest)
        events.event_send("run.resumed", locked, {"model_version": latest.version if latest else None})
    logger.info("experiment %s resumed from %s", experiment.name, f"v{latest.version}" if latest else "scratch")
    experiment.refresh_from_db(fields=["status", "finish_reason"])
    return True


def experiment_reset(experiment: Experiment, version: int, by: str = "an operator") -> ModelVersion:
    """Roll back to model `version`: a new version with its parameters (and strategy state), recorded in the
    lineage (parent: the latest version; contributors: the rollback), and a new round on it; the run resumes.
    """
    with transaction.atomic():
        locked, current = _lock_run(experiment)
        target = locked.versions.filter(version=version).first()
        if target is None:
            raise ApplicationError("unknown_version", f"Experiment {locked.name!r} has no model version {version}.",
                                   404)
        _supersede(current, f"superseded by a rollback to v{version}")
        latest = _latest(locked)
        assert latest is not None  # there is a version (target), so there is a latest one
        spec = experiment_spec(locked)
        params, _ = params_loads(spec, bytes(target.parameters))
        number = latest.version + 1
        blob = params_dumps(spec, params, version_metadata(locked, spec, number, parent=latest.version,
                                                           init=f"rollback to v{version} by {by}"))
        reset = ModelVersion.objects.create(
            experiment=locked, version=number, parameters=blob, sha256=sha256_hex(blob), size=len(blob),
            parent=latest, contributors=[{"rollback_to": version, "by": by}],
            strategy_state=bytes(target.strategy_state),
        )
        locked.status, locked.finish_reason = Experiment.Status.RUNNING, ""
        locked.save(update_fields=["status", "finish_reason"])
        round_open(locked, reset)
        events.event_send("run.reset", locked, {"model_version": number, "rollback_to": version})
    logger.warning("experiment %s rolled back to v%d by %s: new version v%d", experiment.name, version, by, number)
    experiment.refresh_from_db(fields=["status", "finish_reason"])
    return reset
