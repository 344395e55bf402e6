"""A node that leaves cleanly after its run ended is `done` in the API, the dashboard and the admin, not offline."""
from datetime import timedelta

import pytest
from django.utils import timezone

from aggregation.dashboard import dashboard_snapshot
from aggregation.services.lifecycle import experiment_finish, experiment_resume, experiment_stop
from nodes_app.models import Node
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def _done(api, token, experiment="exp"):
    return api.post(f"/api/nodes/done?experiment={experiment}", HTTP_AUTHORIZATION=f"Bearer {token}")


def _long_ago(node_id: str) -> None:
    """As if the node's last contact was an hour ago: past any stale or offline threshold."""
    Node.objects.filter(node_id=node_id).update(last_seen=timezone.now() - timedelta(hours=1))


def test_a_node_is_done_only_after_its_run_ended_and_stays_done_however_long_ago_it_left(api, experiment, register,
                                                                                      uploader):
    token = register("n1")
    uploader(token, 1, params_for(1))

    refused = _done(api, token)
    experiment_finish(experiment, "max_rounds")
    accepted = _done(api, token)
    _long_ago("n1")

    assert refused.status_code == 409 and refused.json()["error"] == "run_not_over"
    assert accepted.status_code == 200
    assert accepted.json() | {"last_seen": None, "done_at": None} == {
        "node_id": "n1", "address": "", "status": "done", "last_seen": None, "source": "api", "last_round": 1,
        "experiment": "exp", "done_at": None, "data": {}}
    listed = {n["node_id"]: n for n in api.get("/api/nodes").json()}
    assert listed["n1"]["status"] == "done" and listed["n1"]["done_at"] is not None
    assert {n["node_id"]: n["status"] for n in dashboard_snapshot("exp")["nodes"]} == {"n1": "done"}


def test_done_needs_the_nodes_token(api, experiment):
    experiment_stop(experiment)

    assert _done(api, "not-a-token").status_code == 401
    assert api.post("/api/nodes/done?experiment=exp").status_code == 401


def test_a_done_node_that_trains_or_registers_again_is_back_online(api, experiment, register, uploader):
    token = register("n1")
    experiment_stop(experiment)
    assert _done(api, token).status_code == 200
    experiment.refresh_from_db()
    experiment_resume(experiment)
    number = api.get("/api/rounds/current?experiment=exp").json()["number"]

    uploader(token, number, params_for(2))
    after_training = Node.objects.get(node_id="n1").status
    experiment.refresh_from_db()
    experiment_stop(experiment)
    assert _done(api, token).status_code == 200
    again = api.post("/api/nodes/register", {"node_id": "n1", "address": ""}, format="json",
                     HTTP_AUTHORIZATION=f"Bearer {token}")

    assert after_training == "online"
    assert again.status_code == 200 and again.json()["status"] == "online"
    assert Node.objects.get(node_id="n1").done_at is None


def test_the_admin_shows_a_done_node_as_done(admin_client, experiment, register):
    token = register("n1")
    experiment_stop(experiment)
    admin_client.post("/api/nodes/done?experiment=exp", HTTP_AUTHORIZATION=f"Bearer {token}")
    _long_ago("n1")

    page = admin_client.get("/admin/nodes_app/node/").content.decode()

    assert '<td class="field-status">done</td>' in page
    assert "online" not in page and "offline" not in page


def test_in_an_ended_experiment_a_node_that_moved_on_to_another_is_done(api, make_experiment, register, uploader):
    first, second = make_experiment(name="exp"), make_experiment(name="next")
    token = register("n1")
    uploader(token, 1, params_for(1), experiment="exp")
    api.get("/api/rounds/current?experiment=next", HTTP_AUTHORIZATION=f"Bearer {token}")  # now works on next
    while_running = {n["node_id"]: n["status"] for n in dashboard_snapshot("exp")["nodes"]}

    experiment_finish(first, "max_rounds")

    assert while_running == {"n1": "online"}
    assert {n["node_id"]: n["status"] for n in dashboard_snapshot("exp")["nodes"]} == {"n1": "done"}
    assert {n["node_id"]: n["status"] for n in dashboard_snapshot("next")["nodes"]} == {"n1": "online"}
    assert second.status == "running"


def test_a_node_describes_its_data_when_it_registers_and_the_dashboard_shows_the_partition(api, make_experiment):
    make_experiment(name="exp")
    headers = {"HTTP_X_ENROLLMENT_TOKEN": "test-enrollment-token"}
    for part in range(2):
        data = {"data": "digits", "partition": "shards:2", "part": f"{part}/2", "train_rows": 400}
        response = api.post("/api/nodes/register", {"node_id": f"n{part}", "address": "", "data": data},
                            format="json", **headers)
        assert response.status_code == 201 and response.json()["data"] == data
    bad = [api.post("/api/nodes/register", {"node_id": "x", "address": "", "data": data}, format="json", **headers)
           for data in ({"a": [1]}, {"a": "x" * 201}, {f"k{i}": i for i in range(17)}, "digits")]

    card = dashboard_snapshot("exp")["experiment"]

    assert [r.status_code for r in bad] == [400] * 4 and not Node.objects.filter(node_id="x").exists()
    assert card["partitions"] == ["shards:2"] and card["datasets"] == ["digits"]
