"""Rounds: FedAvg when full, exactly once, deadlines with quorum, failures, max_rounds."""
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from aggregation.fl.aggregate import weighted_average
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import params_loads
from aggregation.models import Experiment, ModelVersion, Round
from aggregation.services import round_aggregate, rounds_sweep
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def _version_params(experiment, version):
    blob = ModelVersion.objects.get(experiment=experiment, version=version).parameters
    return params_loads(MLPSpec(), bytes(blob))[0]


def test_a_full_round_is_aggregated_by_fedavg_weighted_by_examples(experiment, register, uploader):
    tokens = [register(str(i)) for i in range(3)]
    updates = [(params_for(10 + i), n) for i, n in enumerate([10, 30, 60])]

    codes = [uploader(t, 1, p, n).status_code for t, (p, n) in zip(tokens, updates)]

    assert codes == [201, 201, 201]
    first = Round.objects.get(experiment=experiment, number=1)
    assert first.status == Round.Status.CLOSED
    expected = weighted_average(updates)
    for got, want in zip(_version_params(experiment, 1), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    version = ModelVersion.objects.get(experiment=experiment, version=1)
    assert version.parent.version == 0 and version.round == first
    assert sorted(c["node"] for c in version.contributors) == ["0", "1", "2"]
    second = Round.objects.get(experiment=experiment, number=2)
    assert second.status == Round.Status.OPEN and second.base_version == version


def test_round_metrics_are_the_example_weighted_mean_of_node_metrics(experiment, register, uploader):
    tokens = [register(str(i)) for i in range(3)]

    for token, loss, n in zip(tokens, [1.0, 2.0, 4.0], [1, 1, 2]):
        uploader(token, 1, params_for(1), n, metrics={"loss": loss})

    assert Round.objects.get(experiment=experiment, number=1).metrics["loss"] == pytest.approx(2.75)


def test_round_aggregate_runs_once_even_when_called_again(experiment, register, uploader):
    tokens = [register(str(i)) for i in range(3)]
    for token in tokens:
        uploader(token, 1, params_for(1))
    closed = Round.objects.get(experiment=experiment, number=1)

    again = round_aggregate(closed.pk)

    assert again is False
    assert ModelVersion.objects.filter(experiment=experiment).count() == 2


def test_a_late_upload_for_a_closed_round_gets_409_with_the_current_round(experiment, register, uploader):
    tokens = [register(str(i)) for i in range(4)]
    for token in tokens[:3]:
        uploader(token, 1, params_for(1))

    late = uploader(tokens[3], 1, params_for(2))

    assert late.status_code == 409
    assert late.json() | {"detail": None} == {"error": "round_closed", "detail": None, "current_round": 2}


def test_updates_for_the_next_round_train_on_the_new_version(experiment, register, uploader):
    tokens = [register(str(i)) for i in range(3)]
    for token in tokens:
        uploader(token, 1, params_for(1))

    responses = [uploader(token, 2, params_for(2)) for token in tokens]

    assert [r.status_code for r in responses] == [201, 201, 201]
    assert Round.objects.get(experiment=experiment, number=3).base_version.version == 2


def test_the_deadline_aggregates_what_arrived_when_the_quorum_is_met(experiment, register, uploader):
    tokens = [register(str(i)) for i in range(2)]
    for token, seed in zip(tokens, [1, 2]):
        uploader(token, 1, params_for(seed), 10)
    assert rounds_sweep() == 0  # before the deadline nothing happens

    touched = rounds_sweep(now=timezone.now() + timedelta(seconds=301))

    assert touched == 1
    assert Round.objects.get(experiment=experiment, number=1).status == Round.Status.CLOSED
    expected = weighted_average([(params_for(1), 10), (params_for(2), 10)])
    np.testing.assert_allclose(_version_params(experiment, 1)[0], expected[0], rtol=1e-6)


def test_the_deadline_fails_a_round_below_quorum_and_retries_on_the_same_model(experiment, register, uploader):
    uploader(register("1"), 1, params_for(1))

    rounds_sweep(now=timezone.now() + timedelta(seconds=301))

    failed = Round.objects.get(experiment=experiment, number=1)
    assert failed.status == Round.Status.FAILED and "1 of the 2" in failed.failure_reason
    retry = Round.objects.get(experiment=experiment, number=2)
    assert retry.status == Round.Status.OPEN and retry.base_version.version == 0
    assert ModelVersion.objects.filter(experiment=experiment).count() == 1


def test_the_deadline_extends_a_round_below_quorum_when_configured(make_experiment, register, uploader):
    experiment = make_experiment(on_timeout="extend")
    later = timezone.now() + timedelta(seconds=301)

    rounds_sweep(now=later)

    extended = Round.objects.get(experiment=experiment, number=1)
    assert extended.status == Round.Status.OPEN and extended.deadline > later
    assert not Round.objects.filter(experiment=experiment, number=2).exists()


def test_the_run_finishes_after_max_rounds(make_experiment, register, uploader):
    experiment = make_experiment(max_rounds=2)
    tokens = [register(str(i)) for i in range(3)]

    for number in (1, 2):
        for token in tokens:
            assert uploader(token, number, params_for(number)).status_code == 201

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.FINISHED
    assert experiment.rounds.count() == 2
    assert experiment.versions.count() == 3


def test_a_lost_aggregation_is_enqueued_again_by_the_sweeper(experiment, register, uploader):
    tokens = [register(str(i)) for i in range(3)]
    for token in tokens[:2]:
        uploader(token, 1, params_for(1))
    # Simulate a full round whose enqueue was lost: aggregating, but no task ran.
    Round.objects.filter(experiment=experiment, number=1).update(
        status=Round.Status.AGGREGATING, aggregation_requested_at=timezone.now() - timedelta(hours=1)
    )

    touched = rounds_sweep()

    assert touched == 1
    assert Round.objects.get(experiment=experiment, number=1).status == Round.Status.CLOSED
    assert ModelVersion.objects.filter(experiment=experiment, version=1).exists()


def test_the_deadline_extends_a_round_nobody_contributed_to_instead_of_failing_it(experiment):
    later = timezone.now() + timedelta(seconds=301)

    rounds_sweep(now=later)

    first = Round.objects.get(experiment=experiment, number=1)
    assert first.status == Round.Status.OPEN and first.deadline > later
    assert experiment.rounds.count() == 1
