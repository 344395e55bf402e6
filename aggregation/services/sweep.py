"""The sweeper: rounds past their deadline are aggregated, failed or extended; lost aggregations re-enqueued."""
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from aggregation import events
from aggregation.models import Experiment, Round
from aggregation.services.features import REPORTED_SCALINGS, feature_stats_settle
from aggregation.services.handover import aggregation_enqueue, round_start_aggregation
from aggregation.services.rounds import failed_nodes_reason, round_fail

logger = logging.getLogger("fedsite.rounds")


def rounds_sweep(now: datetime | None = None) -> int:
    """Act on rounds whose deadline passed or whose aggregation was lost; returns how many it touched."""
    now = now or timezone.now()
    touched = 0
    due = Round.objects.filter(status=Round.Status.OPEN, deadline__lte=now).values_list("pk", flat=True)
    for round_id in list(due):
        with transaction.atomic():
            rnd = Round.objects.select_for_update().select_related("experiment", "base_version").get(pk=round_id)
            if rnd.status != Round.Status.OPEN or rnd.deadline > now:
                continue
            experiment = rnd.experiment
            received = rnd.updates.count()
            if received >= experiment.min_nodes:
                logger.info("[%s] round %d deadline: quorum met (%d/%d)", experiment.name, rnd.number,
                            received, experiment.total_nodes)
                round_start_aggregation(rnd)
            elif rnd.node_failures and (experiment.on_timeout == Experiment.OnTimeout.FAIL
                                        or received + len(rnd.node_failures) >= experiment.total_nodes):
                # Nodes said they cannot train on this model: waiting longer for them would wait forever
                # (with `extend`, only once nobody else is still expected).
                round_fail(rnd, f"deadline passed with {failed_nodes_reason(rnd, received)}")
            elif received == 0 or experiment.on_timeout == Experiment.OnTimeout.EXTEND:
                # With no update at all there is nobody to retry for: a failed round and an identical
                # new one would only add noise (and round 1 may have been opened long before any node).
                rnd.deadline = now + timedelta(seconds=experiment.round_timeout_s)
                rnd.save(update_fields=["deadline"])
                logger.info("[%s] round %d deadline extended: %d of %d quorum", experiment.name, rnd.number,
                            received, experiment.min_nodes)
                events.event_send("round.extended", experiment, {"round": rnd.number,
                                                                  "deadline": rnd.deadline.isoformat()})
            else:
                round_fail(rnd, f"deadline passed with {received} of the {experiment.min_nodes} updates needed")
            touched += 1
    # An aggregating round with no live task (enqueue lost, broker down): the task is idempotent,
    # so enqueueing it again is always safe.
    stuck_before = now - timedelta(seconds=settings.FL_AGGREGATION_RETRY_S)
    stuck = Round.objects.filter(
        Q(aggregation_requested_at__isnull=True) | Q(aggregation_requested_at__lte=stuck_before),
        status=Round.Status.AGGREGATING,
    )
    for round_id in list(stuck.values_list("pk", flat=True)):
        Round.objects.filter(pk=round_id).update(aggregation_requested_at=now)
        logger.warning("round id %d is aggregating but its task was lost or is late; enqueueing it again", round_id)
        aggregation_enqueue(round_id)
        touched += 1
    # Feature statistics waiting for nodes that never reported: a quorum's, once its round timeout has passed.
    # Only experiments still collecting are read: a settled one is never loaded again.
    waiting = (Experiment.objects.filter(feature_scaling__in=REPORTED_SCALINGS, feature_stats={},
                                         feature_reports__isnull=False)
               .exclude(status__in=(Experiment.Status.FINISHED, Experiment.Status.STOPPED)).distinct())
    for experiment in waiting:
        if feature_stats_settle(experiment):
            touched += 1
    return touched
