"""Racing last uploads against the real database: one aggregation, one model version, no 500."""
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from aggregation.models import ModelVersion, Round
from tests.conftest import params_for, upload

pytestmark = pytest.mark.django_db(transaction=True)


def _race(tokens, number, experiment="exp"):
    barrier = threading.Barrier(len(tokens))
    results: dict[str, int] = {}

    def send(token: str, seed: int) -> None:
        client = APIClient()
        try:
            barrier.wait()
            results[token] = upload(client, token, number, params_for(seed), 10 + seed,
                                    experiment=experiment).status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(t, i)) for i, t in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("nodes", [3, 8])
def test_racing_uploads_close_the_round_with_exactly_one_aggregation(make_experiment, register, nodes):
    experiment = make_experiment(total_nodes=nodes, min_nodes=1)
    tokens = [register(f"n{i}") for i in range(nodes)]

    results = _race(tokens, 1)

    assert sorted(results.values()) == [201] * nodes
    assert Round.objects.get(experiment=experiment, number=1).status == Round.Status.CLOSED
    assert ModelVersion.objects.filter(experiment=experiment).count() == 2
    assert Round.objects.filter(experiment=experiment, status=Round.Status.OPEN).count() == 1


def test_racing_overfull_uploads_accept_exactly_total_nodes(make_experiment, register):
    experiment = make_experiment(total_nodes=4, min_nodes=1)
    tokens = [register(f"n{i}") for i in range(7)]

    results = _race(tokens, 1)

    codes = sorted(results.values())
    assert codes == [201] * 4 + [409] * 3
    assert Round.objects.get(experiment=experiment, number=1).updates.count() == 4
    assert ModelVersion.objects.filter(experiment=experiment).count() == 2


def _recording_parse(monkeypatch, inside_together: threading.Barrier | None):
    """Wrap the upload parser (our own code) to record how many requests are inside it at once."""
    from aggregation import apis

    real, lock, state = apis.parsed_update, threading.Lock(), {"now": 0, "most": 0}

    def recording(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            if inside_together is not None:
                inside_together.wait(timeout=10)  # passes only if that many are inside at once
            else:
                threading.Event().wait(0.1)
            return real(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(apis, "parsed_update", recording)
    return state


def test_uploads_past_the_concurrency_limit_wait_for_a_slot(make_experiment, register, monkeypatch, settings):
    settings.FL_UPLOAD_CONCURRENCY = 1
    make_experiment(total_nodes=10, min_nodes=1)
    tokens = [register(f"n{i}") for i in range(4)]
    state = _recording_parse(monkeypatch, None)

    results = _race(tokens, 1)

    assert sorted(results.values()) == [201] * 4
    assert state["most"] == 1


def test_uploads_within_the_limit_are_processed_together(make_experiment, register, monkeypatch, settings):
    settings.FL_UPLOAD_CONCURRENCY = 3
    make_experiment(total_nodes=10, min_nodes=1)
    tokens = [register(f"n{i}") for i in range(3)]
    state = _recording_parse(monkeypatch, threading.Barrier(3))

    results = _race(tokens, 1)

    assert sorted(results.values()) == [201] * 3
    assert state["most"] == 3
