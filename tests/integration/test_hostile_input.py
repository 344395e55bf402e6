"""The inputs an attacker sent that once answered 500: each now gets a 4xx JSON error with a sentence."""
import json

import numpy as np
import pytest
from django.test import Client

from aggregation.fl.serde import dumps
from aggregation.models import Update
from tests.conftest import params_for

pytestmark = pytest.mark.django_db

DEEP = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
HUGE_INT = "1" + "0" * 400


def assert_json_4xx(response, status: int | None = None) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    if status is not None:
        assert response.status_code == status
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["detail"].endswith(".")
    return body


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize("path", ["/message", "/api/nodes/register"])
def test_json_nested_too_deeply_is_a_400_without_any_token(api, experiment, path, body):
    response = api.generic("POST", path, body, content_type="application/json")

    assert_json_4xx(response, 400)


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_a_deeply_nested_json_upload_is_a_400(api, experiment, register, body):
    token = register("n1")

    response = api.generic("POST", "/api/rounds/1/updates?experiment=exp", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")

    assert_json_4xx(response, 400)
    assert not Update.objects.exists()


def safetensors_upload(metadata: dict[str, str]) -> bytes:
    names = ["w1", "b1", "w2", "b2"]
    return dumps(dict(zip(names, params_for(1))), metadata)


@pytest.mark.parametrize(("metadata", "error"), [
    ({"num_examples": "10", "metrics": "[" * 100_000}, "bad_metrics"),
    ({"num_examples": "²", "metrics": "{}"}, "bad_num_examples"),
    ({"num_examples": "9" * 5000, "metrics": "{}"}, "bad_num_examples"),
    ({"num_examples": "10", "metrics": '{"loss": ' + HUGE_INT + "}"}, "bad_metrics"),
], ids=["deep-metrics", "superscript-two", "5000-digits", "huge-int-metric"])
def test_hostile_safetensors_metadata_is_a_400(api, experiment, register, metadata, error):
    token = register("n1")

    response = api.generic("POST", "/api/rounds/1/updates?experiment=exp", safetensors_upload(metadata),
                           content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert assert_json_4xx(response, 400)["error"] == error
    assert not Update.objects.exists()


@pytest.mark.parametrize(("num_examples", "metrics", "error"), [
    ('"²"', "{}", "bad_num_examples"),
    ('"' + "9" * 5000 + '"', "{}", "bad_num_examples"),
    ("10", '{"loss": ' + HUGE_INT + "}", "bad_metrics"),
], ids=["superscript-two", "5000-digits", "huge-int-metric"])
def test_hostile_json_upload_fields_are_a_400(api, experiment, register, num_examples, metrics, error):
    token = register("n1")
    flat = json.dumps(np.concatenate([p.ravel() for p in params_for(1)]).tolist())
    body = f'{{"parameters": {flat}, "num_examples": {num_examples}, "metrics": {metrics}}}'

    response = api.generic("POST", "/api/rounds/1/updates?experiment=exp", body.encode(),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert assert_json_4xx(response, 400)["error"] == error
    assert not Update.objects.exists()


def test_a_prototype_update_with_a_number_beyond_float_range_is_a_400(api, experiment, register):
    token = register("n1")
    flat = np.concatenate([p.ravel() for p in params_for(1)]).tolist()
    body = json.dumps({"UpdateModel": {"params": flat[:-1]}})[:-3] + ", " + HUGE_INT + "]}}"

    response = api.generic("POST", "/message?experiment=exp", body.encode(), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")

    assert_json_4xx(response, 400)
    assert not Update.objects.exists()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_request_to_no_route_is_a_json_404_whatever_the_method(method):
    # A browser-less client has no CSRF cookie: it must still learn that the path does not exist.
    response = Client(enforce_csrf_checks=True).generic(method, "/api/no-such-thing", b"{}",
                                                        content_type="application/json")

    assert assert_json_4xx(response, 404)["error"] == "not_found"


@pytest.mark.parametrize(("node_id", "sentence"), [
    (" 1", "must not begin or end with spaces"),
    ("1 ", "must not begin or end with spaces"),
    ("ad\u202emin", "invisible formatting characters"),
    ("a\u200bb", "invisible formatting characters"),
    ("a\nb", "invisible formatting characters"),
])
def test_lookalike_node_ids_are_refused(api, node_id, sentence):
    response = api.post("/api/nodes/register", {"node_id": node_id, "address": ""}, format="json",
                        HTTP_X_ENROLLMENT_TOKEN="test-enrollment-token")

    assert sentence in assert_json_4xx(response, 400)["detail"]


def test_a_full_width_node_id_is_the_same_node_as_its_ascii_form(api, register):
    # Prepare: node "12" exists
    token = register("12")

    # Execute: someone enrolls "１２" (full-width digits), then node 12 re-registers with its token and that spelling
    taken = api.post("/api/nodes/register", {"node_id": "\uff11\uff12", "address": ""}, format="json",
                     HTTP_X_ENROLLMENT_TOKEN="test-enrollment-token")
    same = api.post("/api/nodes/register", {"node_id": "\uff11\uff12", "address": ""}, format="json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")

    # Assert
    assert assert_json_4xx(taken, 409)["error"] == "node_exists"
    assert same.status_code == 200 and same.json()["node_id"] == "12"


@pytest.mark.parametrize("path", [
    "/api/rounds/current?experiment=%00", "/api/rounds/current?experiment=a%00b", "/api/models/latest?x=%00",
    "/api/rounds?experiment=%C2%9B%00",
])
def test_a_nul_in_the_query_is_a_400_on_every_database(api, experiment, path):
    """PostgreSQL cannot hold a NUL: it reached a query as a 500 there (found by schemathesis)."""
    response = api.get(path)

    assert response.status_code == 400 and response.json()["error"] == "bad_request"


def test_a_nul_in_a_cookie_is_a_400(api, experiment):
    api.cookies["sessionid"] = "abc\x00def"

    response = api.get("/api/rounds/current")

    assert response.status_code == 400


def test_an_experiment_name_that_is_not_a_slug_names_no_experiment(api, experiment):
    response = api.get("/api/rounds/current?experiment=" + "%C3%A9" * 3)

    assert response.status_code == 404 and response.json()["error"] == "unknown_experiment"
