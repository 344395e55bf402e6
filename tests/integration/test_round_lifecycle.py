"""Rounds: FedAvg when full, exactly once, deadlines with quorum, failures, max_rounds."""
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from aggregation.fl.aggregate import weighted_average
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import params_loads
from aggregation.models import Experiment, ModelVersion, Round
from aggregation.services.rounds import round_aggregate
from aggregation.services.sweep import rounds_sweep
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


def test_updates_beyond_the_norm_bound_are_rejected_with_a_recorded_reason(make_experiment, register, uploader,
                                                                          settings):
    from aggregation.models import Update

    settings.FL_OUTLIER_FACTOR = 0  # the explicit bound alone judges
    experiment = make_experiment(update_max_norm=1e-3)
    base = params_for(7)  # the experiment's version 0 (seed 7)
    near = [p + np.float32(1e-5) for p in base]
    tokens = [register(str(i)) for i in range(3)]

    uploader(tokens[0], 1, near, 10)
    uploader(tokens[1], 1, near, 10)
    uploader(tokens[2], 1, [p * 3 for p in base], 10)

    rejected = Update.objects.get(node__node_id="2")
    assert "more than the limit" in rejected.rejected_reason
    assert Update.objects.exclude(rejected_reason="").count() == 1
    closed = Round.objects.get(experiment=experiment, number=1)
    assert closed.status == Round.Status.CLOSED and closed.metrics["rejected"] == 1
    np.testing.assert_allclose(_version_params(experiment, 1)[0], near[0], rtol=1e-6)
    version = ModelVersion.objects.get(experiment=experiment, version=1)
    assert sorted(c["node"] for c in version.contributors) == ["0", "1"]


def test_a_round_whose_updates_are_all_rejected_fails(make_experiment, register, uploader):
    experiment = make_experiment(update_max_norm=1e-3, total_nodes=2, min_nodes=2)
    tokens = [register(str(i)) for i in range(2)]

    for token in tokens:
        uploader(token, 1, [p * 3 for p in params_for(7)], 10)

    failed = Round.objects.get(experiment=experiment, number=1)
    assert failed.status == Round.Status.FAILED and "all 2 updates were rejected" in failed.failure_reason
    assert Round.objects.get(experiment=experiment, number=2).base_version.version == 0


def test_clipping_pulls_an_update_back_to_the_bound(make_experiment, register, uploader):
    experiment = make_experiment(update_max_norm=0.5, update_norm_mode="clip", total_nodes=1, min_nodes=1)
    base = params_for(7)
    far = [p + np.float32(1.0) for p in base]

    uploader(register("a"), 1, far, 10)

    new = _version_params(experiment, 1)
    distance = np.sqrt(sum(float(((n.astype(np.float64) - b) ** 2).sum()) for n, b in zip(new, base)))
    assert distance == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("strategy", ["fedadam", "fedavgm", "fedyogi"])
def test_server_side_strategy_state_survives_in_the_model_lineage(make_experiment, register, uploader, strategy):
    from aggregation.fl.registry import strategy_create
    from aggregation.fl.serde import loads
    from aggregation.fl.strategy import FitRes

    params = {"fedadam": {"eta": 0.1}, "fedavgm": {"server_learning_rate": 1.0, "momentum": 0.9},
              "fedyogi": {"eta": 0.1}}[strategy]
    experiment = make_experiment(strategy=strategy, strategy_params=params, total_nodes=2, min_nodes=2)
    tokens = [register(str(i)) for i in range(2)]
    uploads = {1: [(params_for(11), 5), (params_for(12), 15)], 2: [(params_for(13), 10), (params_for(14), 10)]}

    for number, pairs in uploads.items():
        for token, (p, n) in zip(tokens, pairs):
            assert uploader(token, number, p, n).status_code == 201

    # The same two rounds computed directly with one strategy object that never restarted.
    reference = strategy_create(strategy, params)
    current = params_for(7)
    for number, pairs in uploads.items():
        current, _ = reference.aggregate_fit(number, current, [FitRes(p, n, {}) for p, n in pairs], [])
    for got, want in zip(_version_params(experiment, 2), current):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    stored = ModelVersion.objects.get(experiment=experiment, version=2).strategy_state
    assert loads(bytes(stored))[0].keys() == reference.state_dict().keys()


def test_a_dp_experiment_gets_a_secret_noise_seed_and_reports_its_privacy_figures(make_experiment, register,
                                                                                 uploader, api):
    experiment = make_experiment(strategy_params={"dp": {"mode": "fixed", "noise_multiplier": 0.1,
                                                         "clip_norm": 1.0}}, total_nodes=2, min_nodes=2)
    tokens = [register(str(i)) for i in range(2)]

    for i, token in enumerate(tokens):
        uploader(token, 1, params_for(20 + i), 10)

    experiment.refresh_from_db()
    assert isinstance(experiment.strategy_params["dp"]["seed"], int)
    shown = next(e for e in api.get("/api/experiments").json() if e["name"] == "exp")
    assert "seed" not in shown["strategy_params"]["dp"] and shown["strategy_params"]["dp"]["clip_norm"] == 1.0
    metrics = Round.objects.get(experiment=experiment, number=1).metrics
    assert metrics["dp_noise_multiplier"] == 0.1 and metrics["dp_clip_norm"] == 1.0
    assert metrics["dp_noise_stddev"] == pytest.approx(0.1 * 1.0 / 2)
