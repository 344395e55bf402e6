"""Nodes learn of a new round by long-polling: answered at once when the round changed, woken by the commit."""
import threading
import time

import pytest
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from aggregation import events
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_longpoll_answers_at_once_when_the_known_round_is_over(api, experiment):
    started = time.monotonic()

    state = api.get("/api/rounds/current?experiment=exp&wait=20&known=0").json()

    assert state["number"] == 1
    assert time.monotonic() - started < 10


@override_settings(FL_LONGPOLL_MAX_S=0.3)
def test_longpoll_gives_up_after_the_wait_and_returns_the_same_round(api, experiment):
    state = api.get("/api/rounds/current?experiment=exp&wait=20&known=1").json()

    assert state["number"] == 1 and state["status"] == "open"


def _poll_round_1_while(action) -> dict:
    """Long-poll for the end of round 1 in a thread while `action` runs; the answer and its seconds."""
    answer: dict = {}

    def poll() -> None:
        try:
            started = time.monotonic()
            answer["state"] = APIClient().get("/api/rounds/current?experiment=exp&wait=25&known=1").json()
            answer["seconds"] = time.monotonic() - started
        finally:
            connection.close()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)
    action()
    poller.join(timeout=30)
    return answer


# The wake-up tests re-check the database only after the poll's whole 25 s wait: a poll that answers
# before 20 s was woken by the commit, and one whose wake-up is broken answers at 25 s and fails them.
NO_RECHECK = override_settings(FL_LONGPOLL_RECHECK_S=60)


@NO_RECHECK
def test_longpoll_is_woken_by_the_round_closing(api, experiment, register, uploader):
    tokens = [register(str(i)) for i in range(3)]
    for token in tokens[:2]:
        uploader(token, 1, params_for(1))

    answer = _poll_round_1_while(lambda: uploader(tokens[2], 1, params_for(1)))

    assert answer["state"]["number"] == 2 and answer["state"]["model_version"] == 1
    assert answer["seconds"] < 20  # woken by the commit, not by the 25 s timeout


@NO_RECHECK
def test_a_run_that_ends_during_the_wait_is_answered_with_its_reason(api, make_experiment, register, uploader):
    make_experiment(max_rounds=1)
    tokens = [register(str(i)) for i in range(3)]
    for token in tokens[:2]:
        uploader(token, 1, params_for(1))

    answer = _poll_round_1_while(lambda: uploader(tokens[2], 1, params_for(1)))  # closes the last round

    run = answer["state"]["run"]
    assert run["status"] == "finished" and run["finish_reason"] == "max_rounds reached (1)"
    assert answer["seconds"] < 20  # woken by the commit that finished the run


@override_settings(FL_LONGPOLL_RECHECK_S=0.2)
def test_a_change_committed_without_a_wake_up_is_seen_at_the_next_recheck(
        api, experiment, register, uploader, monkeypatch):
    # A Celery worker's commit (scaled mode) wakes no poll of the web process: the re-check must see it.
    monkeypatch.setattr(events, "_notify_waiters", lambda: None)
    tokens = [register(str(i)) for i in range(3)]
    for token in tokens[:2]:
        uploader(token, 1, params_for(1))

    answer = _poll_round_1_while(lambda: uploader(tokens[2], 1, params_for(1)))

    assert answer["state"]["number"] == 2
    assert answer["seconds"] < 20  # seen by a re-check, not at the end of the 25 s wait


def test_the_longpoll_marker_is_one_query(experiment):
    from django.test.utils import CaptureQueriesContext

    from aggregation.selectors import round_marker

    with CaptureQueriesContext(connection) as queries:
        marker = round_marker(experiment)

    assert marker == (1, "running") and len(queries.captured_queries) == 1


@pytest.mark.parametrize("query", ["wait=soon", "wait=nan&known=1", "wait=inf&known=1", "wait=-inf&known=1",
                                   "wait=1&known=one"])
def test_longpoll_rejects_a_malformed_query(api, experiment, query):
    response = api.get(f"/api/rounds/current?experiment=exp&{query}")

    assert response.status_code == 400 and response.json()["error"] == "bad_query"


def test_a_paused_run_holds_the_longpoll_until_it_resumes(api, experiment):
    """Paused, a node's poll for round 1 must wait (not answer at once, again and again) and be answered by
    the new round the resume opens."""
    from aggregation.services.lifecycle import experiment_pause, experiment_resume

    experiment_pause(experiment, "a test")
    answer = _poll_round_1_while(lambda: experiment_resume(experiment))

    assert answer["state"]["number"] == 2 and answer["state"]["run"]["status"] == "running"
