"""Uploading updates: every success and every way a client can get it wrong."""
import json

import numpy as np
import pytest
from django.test import override_settings

from aggregation.fl.model import MLPSpec, flatten
from aggregation.fl.serde import dumps, params_dumps, sha256_hex
from aggregation.models import Update
from aggregation.selectors import round_base_parameters
from tests.conftest import params_for, upload

pytestmark = pytest.mark.django_db


def test_update_submit_accepts_a_binary_safetensors_upload(experiment, register, uploader):
    token = register("1")

    response = uploader(token, 1, params_for(1), 25, metrics={"loss": 0.5})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["round"] == 1 and body["node_id"] == "1" and body["received"] == 1 and body["required"] == 3
    stored = Update.objects.get()
    assert stored.num_examples == 25 and stored.metrics == {"loss": 0.5} and stored.sha256 == body["sha256"]
    delta = np.concatenate([(a.astype(np.float64) - b).ravel() for a, b in zip(params_for(1), params_for(7))])
    assert stored.delta_norm == pytest.approx(np.linalg.norm(delta))


def test_a_float32_body_is_stored_as_sent_and_other_dtypes_are_stored_as_float32(experiment, register, api):
    spec, params = MLPSpec(), params_for(1)
    as_sent = params_dumps(spec, params, {"num_examples": "4", "metrics": json.dumps({"loss": 0.25})})
    wide = dumps({n: p.astype(np.float64) for n, p in zip(spec.names(), params)}, {"num_examples": "4"})
    auth = {"HTTP_AUTHORIZATION": f"Bearer {register('1')}"}
    other = {"HTTP_AUTHORIZATION": f"Bearer {register('2')}"}

    first = api.generic("POST", "/api/rounds/1/updates?experiment=exp", as_sent,
                        content_type="application/octet-stream", **auth)
    second = api.generic("POST", "/api/rounds/1/updates?experiment=exp", wide,
                         content_type="application/octet-stream", **other)

    assert first.status_code == second.status_code == 201
    float32, float64 = Update.objects.order_by("node__node_id")
    assert bytes(float32.parameters) == as_sent  # no re-encoding
    assert bytes(float64.parameters) == params_dumps(spec, params)  # the canonical float32 form
    # Both carry the digest of the parameters, whatever form they were sent in.
    assert float32.sha256 == float64.sha256 == sha256_hex(params_dumps(spec, params)) == first.json()["sha256"]


def test_uploads_are_measured_against_the_round_base_model_decoded_once(experiment, register, uploader):
    base = round_base_parameters(experiment, 1)

    assert all(not layer.flags.writeable for layer in base)
    for got, want in zip(base, params_for(7)):  # the experiment fixture's seed
        np.testing.assert_array_equal(got, want)
    assert round_base_parameters(experiment, 1) is base  # cached: versions never change
    assert round_base_parameters(experiment, 99) is None


def test_update_submit_accepts_the_same_update_as_json(experiment, register, uploader):
    token = register("1")

    response = uploader(token, 1, params_for(1), 5, binary=False)

    assert response.status_code == 201, response.content
    assert Update.objects.get().num_examples == 5


def test_update_submit_is_idempotent_for_an_identical_repeat(experiment, register, uploader):
    token = register("1")
    first = uploader(token, 1, params_for(1))

    again = uploader(token, 1, params_for(1), binary=False)

    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["sha256"] == first.json()["sha256"]
    assert Update.objects.count() == 1


def test_update_submit_rejects_a_different_second_update_from_the_same_node(experiment, register, uploader):
    token = register("1")
    uploader(token, 1, params_for(1))

    response = uploader(token, 1, params_for(2))

    assert response.status_code == 409
    assert response.json()["error"] == "duplicate_update"
    assert Update.objects.count() == 1


def test_one_chatty_node_cannot_fill_a_round(experiment, register, uploader):
    token = register("1")

    codes = [uploader(token, 1, params_for(seed)).status_code for seed in range(4)]

    assert codes == [201, 409, 409, 409]
    assert experiment.rounds.get(number=1).status == "open"


@pytest.mark.parametrize("header", [None, "Bearer not-a-real-token", "Basic abc"])
def test_update_submit_requires_a_valid_token(experiment, api, register, header):
    register("1")
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    body = {"parameters": flatten(params_for(1)).tolist(), "num_examples": 1}

    response = api.post("/api/rounds/1/updates?experiment=exp", body, format="json", **extra)

    assert response.status_code == 401
    assert response.json()["error"] in ("missing_token", "bad_token")
    assert "token" in response.json()["detail"]
    assert not Update.objects.exists()


def _post_json(api, token, payload, number=1):
    return api.post(f"/api/rounds/{number}/updates?experiment=exp", payload, format="json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda p: {**p, "parameters": p["parameters"][:-1]}, "wrong_length"),
        (lambda p: {**p, "parameters": p["parameters"] + [0.0]}, "wrong_length"),
        (lambda p: {**p, "parameters": ["a"] * 769}, "bad_parameters"),
        (lambda p: {**p, "parameters": [[1.0, 2.0], [3.0]]}, "wrong_shape"),
        (lambda p: {**p, "parameters": "nope"}, "bad_parameters"),
        (lambda p: {**p, "parameters": {"w1": [[0.0] * 64] * 10}}, "wrong_shape"),
        (lambda p: {**p, "num_examples": 0}, "bad_num_examples"),
        (lambda p: {**p, "num_examples": -3}, "bad_num_examples"),
        (lambda p: {**p, "num_examples": "many"}, "bad_num_examples"),
        (lambda p: {**p, "num_examples": True}, "bad_num_examples"),
        (lambda p: {**p, "metrics": {"loss": "low"}}, "bad_metrics"),
        (lambda p: {**p, "metrics": [1, 2]}, "bad_metrics"),
        (lambda p: {"num_examples": 1}, "bad_update"),
        (lambda p: [1, 2, 3], "bad_update"),
    ],
)
def test_update_submit_rejects_malformed_json_with_a_sentence(experiment, api, register, mutate, code):
    token = register("1")
    good = {"parameters": flatten(params_for(1)).tolist(), "num_examples": 3, "metrics": {"loss": 1.0}}

    response = _post_json(api, token, mutate(good))

    assert response.status_code == 400, response.content
    assert response.json()["error"] == code
    assert len(response.json()["detail"]) > 10
    assert not Update.objects.exists()


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e39"])
def test_update_submit_rejects_non_finite_parameters(experiment, api, register, bad):
    token = register("1")
    values = [0.0] * 768 + ["__BAD__"]
    body = json.dumps({"parameters": values, "num_examples": 1}).replace('"__BAD__"', bad)

    response = api.generic("POST", "/api/rounds/1/updates?experiment=exp", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "not_finite"
    assert "b2" in response.json()["detail"]


def test_update_submit_rejects_a_binary_upload_with_a_wrong_tensor_shape(experiment, api, register):
    token = register("1")
    params = dict(zip(MLPSpec().names(), params_for(1)))
    params["w1"] = np.zeros((10, 32), np.float32)
    body = dumps(params, {"num_examples": "4"})

    response = api.generic("POST", "/api/rounds/1/updates?experiment=exp", body,
                           content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 400
    assert response.json()["error"] == "bad_safetensors" and "w1" in response.json()["detail"]


@pytest.mark.parametrize("body", [b"", b"garbage", b"\xff" * 8 + b"{}", (10).to_bytes(8, "little") + b"{not json}"])
def test_update_submit_rejects_bytes_that_are_not_safetensors(experiment, api, register, body):
    token = register("1")

    response = api.generic("POST", "/api/rounds/1/updates?experiment=exp", body,
                           content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 400
    assert response.json()["error"] in ("bad_safetensors", "empty_body")


def test_update_submit_rejects_bad_json_and_unknown_content_types(experiment, api, register):
    token = register("1")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    bad_json = api.generic("POST", "/api/rounds/1/updates?experiment=exp", "{nope", content_type="application/json",
                           **auth)
    xml = api.generic("POST", "/api/rounds/1/updates?experiment=exp", "<a/>", content_type="application/xml", **auth)

    assert bad_json.status_code == 400 and bad_json.json()["error"] == "bad_json"
    assert xml.status_code == 415 and xml.json()["error"] == "unsupported_media_type"


@override_settings(FL_MAX_UPDATE_BYTES=2048)
def test_update_submit_refuses_an_oversized_body_with_413(experiment, register, uploader):
    token = register("1")

    response = uploader(token, 1, params_for(1))

    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert not Update.objects.exists()


def test_update_submit_rejects_an_unknown_round_with_the_current_number(experiment, register, uploader):
    token = register("1")

    response = uploader(token, 99, params_for(1))

    assert response.status_code == 404
    assert response.json()["error"] == "unknown_round" and response.json()["current_round"] == 1


def test_update_submit_rejects_an_unknown_experiment(experiment, api, register):
    token = register("1")

    response = upload(api, token, 1, params_for(1), experiment="nope")

    assert response.status_code == 404 and response.json()["error"] == "unknown_experiment"
