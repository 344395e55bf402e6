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
