"""Stop, resume and roll back a run, from the CLI and the operator API, through one service."""
import base64
import io

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import loads, params_loads
from aggregation.models import Experiment, ModelVersion, Round
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_rounds(experiment, register, uploader, rounds: int) -> None:
    tokens = [register(str(i)) for i in range(3)]
    for number in range(1, rounds + 1):
        for i, token in enumerate(tokens):
            uploader(token, number, [p + np.float32(0.01 * (i + number)) for p in params_for(7)])


def params(experiment, version):
    blob = ModelVersion.objects.get(experiment=experiment, version=version).parameters
    return params_loads(MLPSpec(), bytes(blob))[0]


def manage(*args: str) -> str:
    out = io.StringIO()
    call_command("experiment", *args, stdout=out)
    return out.getvalue()


def test_a_reset_makes_a_new_version_from_an_earlier_one_and_trains_on(experiment, register, uploader):
    # Prepare: three rounds, so versions 0..3 and round 4 open
    run_rounds(experiment, register, uploader, 3)

    # Execute
    said = manage("reset", "exp", "--to", "1")

    # Assert: v4 holds v1's parameters, its lineage says so, round 4 failed and round 5 trains on v4
    assert "model v4 is v1's parameters" in said
    v4 = ModelVersion.objects.get(experiment=experiment, version=4)
    assert v4.parent.version == 3 and v4.contributors == [{"rollback_to": 1, "by": "manage.py experiment reset"}]
    for got, want in zip(params(experiment, 4), params(experiment, 1)):
        np.testing.assert_array_equal(got, want)
    assert loads(bytes(v4.parameters))[1]["fedsite.init"] == "rollback to v1 by manage.py experiment reset"
    superseded = Round.objects.get(experiment=experiment, number=4)
    assert superseded.status == Round.Status.FAILED and "rollback to v1" in superseded.failure_reason
    assert Round.objects.get(experiment=experiment, number=5).base_version.version == 4


def test_stop_then_resume_from_the_cli(experiment, api):
    stopped = manage("stop", "exp")
    state = api.get("/api/rounds/current?experiment=exp").json()
    resumed = manage("resume", "exp")

    assert "exp: stopped" in stopped and state["run"]["status"] == "stopped"
    assert "running again" in resumed
    assert Experiment.objects.get(name="exp").status == "running"
    # the round that was open when it stopped is replaced by a fresh one on the same model
    assert list(experiment.rounds.order_by("number").values_list("status", flat=True)) == ["failed", "open"]


def test_the_cli_says_what_is_wrong(experiment):
    with pytest.raises(CommandError, match="no experiment named 'nope'"):
        manage("stop", "nope")
    with pytest.raises(CommandError, match="has no model version 9"):
        manage("reset", "exp", "--to", "9")
    assert "exp" in manage("list") and "strategy: fedavg" in manage("show", "exp")


def basic(user: str, password: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_operators_act_through_the_api_and_nodes_cannot(experiment, api, register, uploader):
    run_rounds(experiment, register, uploader, 2)
    get_user_model().objects.create_superuser("op", "op@example.org", "pw")
    node = {"HTTP_AUTHORIZATION": f"Bearer {register('intruder')}"}

    refused = api.post("/api/experiments/exp/reset", {"version": 0}, format="json", **node)
    reset = api.post("/api/experiments/exp/reset", {"version": 0}, format="json", **basic("op", "pw"))
    stop = api.post("/api/experiments/exp/stop", format="json", **basic("op", "pw"))
    unknown = api.post("/api/experiments/exp/explode", format="json", **basic("op", "pw"))
    bad = api.post("/api/experiments/exp/reset", {"version": "x"}, format="json", **basic("op", "pw"))

    assert (refused.status_code, refused.json()["error"]) == (401, "operator_required")
    assert reset.status_code == 200 and reset.json()["model_version"] == 3
    assert stop.json() == {"name": "exp", "status": "stopped", "changed": True, "model_version": 3}
    assert (unknown.status_code, bad.status_code) == (404, 400)
    assert ModelVersion.objects.get(experiment=experiment, version=3).contributors[0]["rollback_to"] == 0


def test_a_stopped_run_takes_no_more_updates(make_experiment, register, uploader):
    experiment = make_experiment(total_nodes=2, min_nodes=2)
    tokens = [register(str(i)) for i in range(2)]
    uploader(tokens[0], 1, params_for(7))

    manage("stop", "exp")
    late = uploader(tokens[1], 1, params_for(7))

    assert (late.status_code, late.json()["error"]) == (409, "round_closed")
    assert list(experiment.versions.values_list("version", flat=True)) == [0]


def test_an_aggregation_that_ends_after_a_stop_opens_no_new_round(make_experiment, register, uploader):
    from aggregation.services.rounds import round_aggregate

    # Prepare: round 1 full and aggregating when the operator's stop lands (its status written directly, as a
    # stop committed by another process while the worker aggregates would be)
    experiment = make_experiment(total_nodes=3, min_nodes=2)
    for token in [register(str(i)) for i in range(2)]:
        uploader(token, 1, params_for(7))
    Round.objects.filter(experiment=experiment, number=1).update(status=Round.Status.AGGREGATING)
    Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.STOPPED, finish_reason="operator")

    # Execute
    round_aggregate(Round.objects.get(experiment=experiment, number=1).pk)

    # Assert: version 1 is kept (the updates were accepted), but the run stays stopped with no round 2
    assert experiment.versions.filter(version=1).exists()
    assert not Round.objects.filter(experiment=experiment, number=2).exists()
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.STOPPED


def test_a_finished_run_is_not_resumed_but_can_be_reset(make_experiment, register, uploader):
    experiment = make_experiment(max_rounds=1)
    run_rounds(experiment, register, uploader, 1)

    with pytest.raises(CommandError, match="raise its max_rounds or reset it"):
        manage("resume", "exp")
    assert "model v2 is v1's parameters" in manage("reset", "exp", "--to", "1")


def test_a_stop_condition_on_federated_accuracy_ends_the_run_once_the_quorum_has_scored(make_experiment, api,
                                                                                        register, uploader):
    # Prepare: round 1 closed by three nodes; the run should end at federated accuracy >= 0.9 (quorum 2)
    experiment = make_experiment(stop_metric="federated_accuracy", stop_op=">=", stop_threshold=0.9)
    tokens = [register(str(i)) for i in range(3)]
    for i, token in enumerate(tokens):
        uploader(token, 1, [p + np.float32(0.01 * i) for p in params_for(7)])

    def score(token, accuracy):
        return api.post("/api/models/1/evaluations?experiment=exp", {"loss": 0.1, "num_examples": 10,
                        "metrics": {"accuracy": accuracy}}, format="json", HTTP_AUTHORIZATION=f"Bearer {token}")

    # Execute: one node's score is not the federation's; the second makes the quorum
    score(tokens[0], 0.95)
    running = Experiment.objects.get(pk=experiment.pk).status
    score(tokens[1], 0.93)

    # Assert
    assert running == "running"
    done = Experiment.objects.get(pk=experiment.pk)
    assert done.status == "finished" and "federated_accuracy >= 0.9" in done.finish_reason
    assert Round.objects.get(experiment=experiment, number=2).status == Round.Status.FAILED


def test_a_run_stopped_before_its_first_model_shows_saves_and_resumes_waiting(admin_client):
    from aggregation.services.experiment_setup import experiment_setup

    waiting = experiment_setup(name="waiting", init_from_node=True)
    manage("stop", "waiting")

    shown = manage("show", "waiting")
    page = admin_client.get(f"/admin/aggregation/experiment/{waiting.pk}/change/")
    resumed = manage("resume", "waiting")

    assert "model: none (no node provided one)" in shown and page.status_code == 200
    assert "running again" in resumed and Experiment.objects.get(pk=waiting.pk).status == "initializing"


def test_pause_holds_the_run_and_resume_or_start_opens_a_new_round(experiment, api, register, uploader):
    tokens = [register(str(i)) for i in range(3)]
    uploader(tokens[0], 1, params_for(7))

    paused = manage("pause", "exp")
    state = api.get("/api/rounds/current?experiment=exp").json()
    late = uploader(tokens[1], 1, params_for(7))
    again = manage("pause", "exp")
    started = manage("start", "exp")

    assert "exp: paused" in paused and "was not running" in again
    assert state["run"]["status"] == "paused"
    assert "paused by manage.py experiment pause" in state["run"]["finish_reason"]
    assert (late.status_code, late.json()["error"]) == (409, "round_closed")
    assert "running again" in started
    assert list(experiment.rounds.order_by("number").values_list("status", flat=True)) == ["failed", "open"]
    assert Round.objects.get(experiment=experiment, number=2).base_version.version == 0
    # a paused run can also be stopped for good
    manage("pause", "exp")
    assert "exp: stopped" in manage("stop", "exp")


def test_operators_pause_and_start_through_the_api(experiment, api, register):
    get_user_model().objects.create_superuser("op", "op@example.org", "pw")
    node = {"HTTP_AUTHORIZATION": f"Bearer {register('intruder')}"}

    refused = api.post("/api/experiments/exp/pause", format="json", **node)
    pause = api.post("/api/experiments/exp/pause", format="json", **basic("op", "pw"))
    start = api.post("/api/experiments/exp/start", format="json", **basic("op", "pw"))

    assert (refused.status_code, refused.json()["error"]) == (401, "operator_required")
    assert pause.json() == {"name": "exp", "status": "paused", "changed": True, "model_version": 0}
    assert start.json() == {"name": "exp", "status": "running", "changed": True, "model_version": 0}


def test_the_admin_pauses_selected_runs(experiment, admin_client):
    response = admin_client.post("/admin/aggregation/experiment/",
                                 {"action": "pause_runs", "_selected_action": [experiment.pk]}, follow=True)

    assert response.status_code == 200 and "Paused: exp." in response.content.decode()
    assert Experiment.objects.get(name="exp").status == "paused"
