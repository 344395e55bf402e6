"""Celery tasks: thin, take ids, idempotent."""
from celery import shared_task

from aggregation import services


@shared_task(acks_late=True)
def round_aggregate(round_id: int) -> bool:
    return services.round_aggregate(round_id)


@shared_task
def rounds_sweep() -> int:
    return services.rounds_sweep()
