"""Celery tasks: thin, take ids, idempotent. The services enqueue these (services/handover.py);
the periodic sweep, which enqueues them in turn, is beat.py's."""
from celery import shared_task

from aggregation.services import rounds


@shared_task(acks_late=True)
def round_aggregate(round_id: int) -> bool:
    return rounds.round_aggregate(round_id)
