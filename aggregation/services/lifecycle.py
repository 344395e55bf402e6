"""An experiment's run after creation: stop it, resume it, or reset it to an earlier model version.

One service layer for the admin's actions, `manage.py experiment` and the operator API alike.
"""
import logging

from django.db import transaction
from django.utils import timezone

from aggregation import events
from aggregation.fl.serde import params_dumps, params_loads, sha256_hex
from aggregation.models import Experiment, ModelVersion, Round
from aggregation.services.experiments import experiment_spec, version_metadata
from aggregation.services.rounds import round_open
from fedsite.errors import ApplicationError

logger = logging.getLogger("fedsite.experiments")


def experiment_stop(experiment: Experiment, reason: str = "stopped by an operator") -> bool:
    """End a running (or initializing) run now: nodes finish with the latest model; False if it had ended."""
    with transaction.atomic():
        stopped = Experiment.objects.filter(
            pk=experiment.pk, status__in=(Experiment.Status.RUNNING, Experiment.Status.INITIALIZING)
        ).update(status=Experiment.Status.STOPPED, finish_reason=reason)
        if stopped:
            latest = experiment.versions.order_by("-version").values_list("version", flat=True).first()
            events.event_send("run.finished", experiment, {"model_version": latest, "reason": reason})
    if stopped:
        logger.info("experiment %s stopped: %s", experiment.name, reason)
    experiment.refresh_from_db(fields=["status", "finish_reason"])
    return bool(stopped)


def _latest(experiment: Experiment) -> ModelVersion | None:
    return experiment.versions.order_by("-version").first()


def _open_round_on(experiment: Experiment, version: ModelVersion, why: str) -> Round:
    """Fail an open round (its updates were for another model) and open a new one on `version`."""
    current = experiment.rounds.select_for_update().order_by("-number").first()
    if current is not None and current.status == Round.Status.AGGREGATING:
        raise ApplicationError("round_aggregating", f"Round {current.number} is being aggregated; try again in a "
                               "moment.", 409)
    if current is not None and current.status == Round.Status.OPEN:
        current.status, current.closed_at, current.failure_reason = Round.Status.FAILED, timezone.now(), why
        current.save(update_fields=["status", "closed_at", "failure_reason"])
    return round_open(experiment, version)


def experiment_resume(experiment: Experiment) -> bool:
    """Run a stopped or finished experiment again from its latest model; False if it was running already."""
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status == Experiment.Status.RUNNING:
            return False
        latest = _latest(locked)
        if latest is None:
            raise ApplicationError("no_model", f"Experiment {locked.name!r} has no model yet to resume from.", 409)
        locked.status, locked.finish_reason = Experiment.Status.RUNNING, ""
        locked.save(update_fields=["status", "finish_reason"])
        _open_round_on(locked, latest, "superseded when the run was resumed")
        events.event_send("run.resumed", locked, {"model_version": latest.version})
    logger.info("experiment %s resumed from v%d", experiment.name, latest.version)
    experiment.refresh_from_db(fields=["status", "finish_reason"])
    return True


def experiment_reset(experiment: Experiment, version: int, by: str = "an operator") -> ModelVersion:
    """Roll back to model `version`: a new version with its parameters (and strategy state), recorded in the
    lineage (parent: the latest version; contributors: the rollback), and a new round on it; the run resumes.
    """
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        target = locked.versions.filter(version=version).first()
        if target is None:
            raise ApplicationError("unknown_version", f"Experiment {locked.name!r} has no model version {version}.",
                                   404)
        latest = _latest(locked)
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
        _open_round_on(locked, reset, f"superseded by a rollback to v{version}")
        events.event_send("run.reset", locked, {"model_version": number, "rollback_to": version})
    logger.warning("experiment %s rolled back to v%d by %s: new version v%d", experiment.name, version, by, number)
    experiment.refresh_from_db(fields=["status", "finish_reason"])
    return reset
