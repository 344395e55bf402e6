"""A Celery app for fault tests only: the same tasks, but every aggregation is held before it runs,
so a test can SIGKILL the worker while the task is in flight (unacknowledged)."""
import os
import time

from celery.signals import task_prerun

from fedsite.celery import app

__all__ = ["app"]


@task_prerun.connect
def hold_aggregation(sender: object = None, task: object = None, **kwargs: object) -> None:
    if getattr(task, "name", "") == "aggregation.tasks.round_aggregate":
        print("slow test worker: holding the aggregation", flush=True)
        time.sleep(float(os.environ.get("SLOW_AGGREGATION_S", "60")))
