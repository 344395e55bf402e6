"""The long-poll: a read that holds its answer until the round a node knows is over or the run ends."""
import time
from typing import Any

from django.conf import settings

from aggregation import events, selectors
from aggregation.models import Experiment

# A poll waits while the run may still open rounds: running, paused, or waiting for its first model.
WAITING = (Experiment.Status.RUNNING, Experiment.Status.INITIALIZING, Experiment.Status.PAUSED)


def round_state_wait(experiment: Experiment, *, known: int | None, wait: float) -> dict[str, Any]:
    """round_state, once the current round is no longer `known` or the run stopped waiting, or after `wait` s.

    Only the round number or the run's status can answer the poll, so the wait re-checks those in one cheap
    query (round_marker) and builds the full state once, for the answer. A change committed in this process
    wakes the wait at once (events.state_changed); one committed by a Celery worker (scaled mode) is seen at
    the next re-check, every FL_LONGPOLL_RECHECK_S seconds.
    """
    until = time.monotonic() + wait
    marker = selectors.round_marker(experiment)
    while marker[0] == known and marker[1] in WAITING:
        remaining = until - time.monotonic()
        if remaining <= 0:
            break
        with events.state_changed:
            events.state_changed.wait(timeout=min(settings.FL_LONGPOLL_RECHECK_S, remaining))
        marker = selectors.round_marker(experiment)
    if marker[1] != experiment.status:  # the run ended, resumed or got its first model during the wait
        experiment.refresh_from_db()
    return selectors.round_state(experiment)
