"""Celery beat's task: the round sweeper (CELERY_BEAT_SCHEDULE). Apart from tasks.py because the sweep
enqueues tasks.py's aggregation: one module for both would import itself in a circle."""
from celery import shared_task

from aggregation.services import sweep


@shared_task
def rounds_sweep() -> int:
    return sweep.rounds_sweep()
