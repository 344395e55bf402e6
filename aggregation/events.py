"""Side effects that must wait for the commit: dashboard pushes, task enqueues, long-poll wake-ups."""
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from celery import Task
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from aggregation.models import Experiment

logger = logging.getLogger("fedsite.events")

DASHBOARD_GROUP = "dashboard"

# Long-polls in this process wait on this; every committed event wakes them. Changes made in
# another process (a Celery worker) are seen by their periodic re-check instead.
state_changed = threading.Condition()


def _notify_waiters() -> None:
    with state_changed:
        state_changed.notify_all()


def _group_send(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer) and not layer.groups.get(DASHBOARD_GROUP):
        # The in-memory layer delivers only inside this process, and no dashboard here listens (simulate,
        # a Celery worker, tests): async_to_sync would start a thread and an event loop for nothing.
        return
    try:
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, message)
    except Exception as exc:  # a dashboard push must never undo or fail committed work
        logger.warning("could not push %s to the dashboard: %s", message.get("event"), exc)


# Events that change what a node's long-poll waits for (the round number, the run's end); an
# accepted update does not, and waking every poll on every upload cost a core at 100 nodes.
WAKES_LONGPOLLS = {"round.opened", "round.failed", "run.finished"}


def event_send(kind: str, experiment: Experiment | None, data: dict[str, Any]) -> None:
    """Push `kind` to dashboards (and wake long-polls if it matters to them) once the transaction commits.

    `experiment` is None for events about nodes, which belong to no experiment.
    """
    message = {"type": "fl.event", "event": kind, "experiment": experiment.name if experiment else None,
               "data": data}

    def send() -> None:
        if kind in WAKES_LONGPOLLS:
            _notify_waiters()
        _group_send(message)

    transaction.on_commit(send, robust=True)


def task_enqueue(task: Task, *args: Any) -> bool:
    """Enqueue a Celery task now; False (and a log line) if the broker refused it."""
    try:
        task.delay(*args)
    except Exception as exc:
        logger.error("could not enqueue %s%s: %s; the sweeper will retry", task.name, args, exc)
        return False
    return True
