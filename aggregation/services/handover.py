"""Handing a full round over to aggregation exactly once: the claim, and the task enqueued on commit."""
from django.db import transaction
from django.utils import timezone

from aggregation import events, tasks
from aggregation.models import Round


def round_start_aggregation(rnd: Round) -> bool:
    """Move an open round to aggregating and enqueue the task on commit; False if someone else did.

    The conditional UPDATE is the claim: whichever transaction flips open → aggregating first
    owns the enqueue, so racing last uploads start one aggregation, not several.
    """
    now = timezone.now()
    claimed = Round.objects.filter(pk=rnd.pk, status=Round.Status.OPEN).update(
        status=Round.Status.AGGREGATING, aggregation_requested_at=now
    )
    if not claimed:
        return False
    rnd.status = Round.Status.AGGREGATING
    rnd.aggregation_requested_at = now
    round_id = rnd.pk
    transaction.on_commit(lambda: aggregation_enqueue(round_id), robust=True)
    return True


def round_settle_if_answered(rnd: Round, received: int) -> None:
    """Aggregate an open round once every expected node has answered, with an update or a failure report.

    `total_nodes` updates aggregate as always; when failure reports make up the rest and the quorum is
    there, nobody else is coming, so the round aggregates now. Below quorum it waits for its deadline
    (where the sweeper fails it): failing at once would open the next round on the same model, which
    the same nodes would fail at once again. Call inside the upload's transaction.
    """
    experiment = rnd.experiment
    if received >= experiment.total_nodes or (
            received >= experiment.min_nodes and received + len(rnd.node_failures) >= experiment.total_nodes):
        round_start_aggregation(rnd)


def aggregation_enqueue(round_id: int) -> bool:
    """Send the aggregation task; if the broker is down, flag the round so the next sweep retries at once."""
    if events.task_enqueue(tasks.round_aggregate, round_id):
        return True
    Round.objects.filter(pk=round_id, status=Round.Status.AGGREGATING).update(aggregation_requested_at=None)
    return False
