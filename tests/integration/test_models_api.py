"""Model versions, round history, experiments and the OpenAPI schema."""
import hashlib

import numpy as np
import pytest

from aggregation.fl.model import MLPSpec, flatten
from aggregation.fl.serde import params_loads
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def _finish_round(register, uploader, number=1):
    tokens = [register(f"{number}-{i}") for i in range(3)]
    for i, token in enumerate(tokens):
        uploader(token, number, params_for(i), 10 * (i + 1), metrics={"loss": float(i)})


def test_model_download_serves_safetensors_with_its_hash(api, experiment):
    response = api.get("/api/models/0/download?experiment=exp", HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 200 and response["Content-Type"] == "application/octet-stream"
    assert hashlib.sha256(response.content).hexdigest() == response["X-Model-Sha256"]
    params, _ = params_loads(MLPSpec(), response.content)
    np.testing.assert_array_equal(flatten(params), flatten(params_for(7)))


def test_model_download_as_json_and_latest(api, experiment, register, uploader):
    _finish_round(register, uploader)

    latest = api.get("/api/models/latest/download?experiment=exp&format=json").json()
    meta = api.get("/api/models/1?experiment=exp").json()

    assert latest["version"] == 1 and len(latest["parameters"]) == 769
    assert meta["parent"] == 0 and meta["round"] == 1 and len(meta["contributors"]) == 3
    assert meta["sha256"] == latest["sha256"]


@pytest.mark.parametrize(("version", "status", "code"), [("5", 404, "unknown_version"), ("abc", 400, "bad_version")])
def test_model_download_of_a_missing_version_is_a_json_error(api, experiment, version, status, code):
    response = api.get(f"/api/models/{version}/download?experiment=exp")

    assert response.status_code == status and response.json()["error"] == code


def test_round_history_lists_rounds_with_metrics_and_durations(api, experiment, register, uploader):
    _finish_round(register, uploader)

    history = api.get("/api/rounds?experiment=exp").json()["rounds"]

    assert [r["number"] for r in history] == [1, 2]
    first = history[0]
    assert first["status"] == "closed" and first["updates"] == 3 and first["model_version"] == 1
    assert first["metrics"]["loss"] == pytest.approx((0 * 10 + 1 * 20 + 2 * 30) / 60)
    assert first["duration_s"] >= 0 and history[1]["status"] == "open"


def test_current_round_reports_config_and_progress(api, experiment, register, uploader):
    token = register("a")
    uploader(token, 1, params_for(1))

    state = api.get("/api/rounds/current?experiment=exp").json()

    assert state["number"] == 1 and state["status"] == "open" and state["model_version"] == 0
    assert state["config"] == {"epochs": 10, "learning_rate": 0.01, "batch_size": 0, "feature_scaling": "global"}
    assert state["progress"] == {"received": 1, "required": 3, "min_nodes": 2, "nodes": ["a"]}
    assert state["model_spec"] == {"kind": "mlp", "layers": [10, 64, 1]}


def test_experiments_are_listed(api, experiment):
    names = [e["name"] for e in api.get("/api/experiments").json()]

    assert names == ["exp"]


def test_openapi_schema_describes_the_api(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/rounds/{number}/updates" in schema["paths"] and "/api/nodes/register" in schema["paths"]


def test_round_detail_lists_updates_with_norms_and_rejections(api, make_experiment, register, uploader):
    make_experiment(update_max_norm=1e-3, total_nodes=2, min_nodes=2)
    tokens = [register(n) for n in ("a", "b")]
    uploader(tokens[0], 1, params_for(7), 4)
    uploader(tokens[1], 1, [p * 2 for p in params_for(7)], 6)

    detail = api.get("/api/rounds/1?experiment=exp").json()
    missing = api.get("/api/rounds/9?experiment=exp")

    assert detail["status"] == "closed" and detail["metrics"]["rejected"] == 1
    by_node = {u["node_id"]: u for u in detail["updates"]}
    assert by_node["a"]["delta_norm"] == 0 and by_node["a"]["rejected_reason"] is None
    assert by_node["b"]["delta_norm"] > 1 and "limit" in by_node["b"]["rejected_reason"]
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_round"


def test_the_admin_refuses_an_experiment_with_bad_strategy_params(admin_client, db):
    response = admin_client.post("/admin/aggregation/experiment/add/", {
        "name": "bad", "status": "running", "model_spec": '{"kind": "mlp", "layers": [10, 64, 1]}',
        "strategy": "fedavg", "strategy_params": '{"nonsense": 1}', "total_nodes": 3, "min_nodes": 2,
        "round_timeout_s": 60, "on_timeout": "fail", "max_rounds": 0, "epochs": 1, "learning_rate": 0.01,
        "batch_size": 0, "seed": 0, "update_norm_mode": "reject",
    })

    assert response.status_code == 200  # the form again, with the error
    assert b"nonsense" in response.content
    from aggregation.models import Experiment

    assert not Experiment.objects.filter(name="bad").exists()


def _blob_reads(queries):
    return [q["sql"] for q in queries if '"parameters"' in q["sql"] and q["sql"].lstrip().upper().startswith("SELECT")]


def test_metadata_reads_never_load_a_blob_and_downloads_read_each_version_once(api, experiment, register, uploader):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _finish_round(register, uploader)
    _finish_round(register, uploader, number=2)

    with CaptureQueriesContext(connection) as metadata:
        for url in ("/api/rounds", "/api/rounds/2", "/api/models/latest", "/api/models/1", "/api/rounds/current"):
            assert api.get(f"{url}?experiment=exp").status_code == 200, url
    with CaptureQueriesContext(connection) as downloads:
        bodies = [api.get("/api/models/2/download?experiment=exp").content for _ in range(3)]

    assert _blob_reads(metadata.captured_queries) == []
    assert len(_blob_reads(downloads.captured_queries)) <= 1  # the first download, or none if already cached
    assert bodies[0] == bodies[1] == bodies[2]
    assert hashlib.sha256(bodies[0]).hexdigest() == api.get("/api/models/2?experiment=exp").json()["sha256"]
