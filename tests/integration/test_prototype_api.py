"""The Rust prototype's endpoints keep their shapes, and now know who is talking."""
import pytest

from aggregation.fl.model import flatten
from aggregation.models import Update
from tests.conftest import params_for

pytestmark = pytest.mark.django_db


def test_status_has_the_prototype_shape_and_changes_nothing(api, make_experiment):
    from aggregation.models import Experiment, Round

    empty = api.get("/status").json()
    make_experiment(name="default")
    before = (Experiment.objects.count(), Round.objects.count())
    first = api.get("/status").json()
    api.get("/status")

    assert empty["status"] == "running" and empty["experiment"] is None
    assert first["status"] == "running" and first["message"] == "Server is active"
    assert first["mode"] == "embedded" and first["experiment"] == "default" and first["round"] == 1
    assert (Experiment.objects.count(), Round.objects.count()) == before


def test_model_params_returns_the_global_model_as_769_floats(api, experiment):
    body = api.get("/api/model/params?experiment=exp").json()

    assert body["status"] == "success" and body["size"] == 769 and len(body["parameters"]) == 769
    assert body["version"] == 0
    assert body["parameters"][:5] == pytest.approx(flatten(params_for(7))[:5].tolist())


def test_message_register_node_enrolls_with_the_address_as_identity(api):
    response = api.post("/message", {"RegisterNode": {"addr": "http://127.0.0.1:8002"}}, format="json",
                        HTTP_X_ENROLLMENT_TOKEN="test-enrollment-token")

    assert response.status_code == 201
    assert response.json()["status"] == "success" and response.json()["token"]
    assert response.json()["node_id"] == "http://127.0.0.1:8002"


def test_message_update_model_needs_a_token(api, experiment):
    response = api.post("/message?experiment=exp", {"UpdateModel": {"params": [0.0] * 769}}, format="json")

    assert response.status_code == 401 and not Update.objects.exists()


def test_message_update_model_with_a_token_counts_for_the_current_round(api, experiment, register):
    token = register("1")
    params = flatten(params_for(3)).tolist()

    response = api.post("/message?experiment=exp", {"UpdateModel": {"params": params}}, format="json",
                        HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 201 and response.json()["round"] == 1
    assert Update.objects.get().num_examples == 1


def test_message_update_model_checks_the_length(api, experiment, register):
    token = register("1")

    response = api.post("/message?experiment=exp", {"UpdateModel": {"params": [0.0] * 12}}, format="json",
                        HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 400 and "769" in response.json()["detail"]


@pytest.mark.parametrize(("body", "code"), [
    ({"Train": {"data": [], "labels": []}}, "wrong_recipient"),
    ({"Predict": {"data": []}}, "wrong_recipient"),
    ({"Dance": {}}, "unknown_message"),
    ({"UpdateModel": {}, "RegisterNode": {}}, "bad_message"),
    ({"UpdateModel": [1, 2]}, "bad_message"),
    ([1, 2], "bad_message"),
])
def test_message_rejects_what_the_server_does_not_take(api, body, code):
    response = api.post("/message", body, format="json")

    assert response.status_code == 400 and response.json()["error"] == code


def test_unknown_paths_and_methods_answer_json(api):
    missing = api.get("/api/nope")
    wrong_method = api.delete("/status")

    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
