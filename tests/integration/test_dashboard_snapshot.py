"""The dashboard's snapshot (/api/dashboard), its page at / and the optional login in front of both."""
import os
import re

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import Client

from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import params_loads
from aggregation.models import Update
from tests.conftest import params_for

pytestmark = pytest.mark.django_db(transaction=True)


def _download(api, version: int) -> list[np.ndarray]:
    response = api.get(f"/api/models/{version}/download?experiment=default")
    assert response.status_code == 200
    return params_loads(MLPSpec(), response.content)[0]


def test_dashboard_snapshot_summarises_each_tensor_of_the_global_model(api, make_experiment):
    make_experiment(name="default")
    params = _download(api, 0)

    summary = api.get("/api/dashboard").json()["model"]["summary"]

    assert [layer["name"] for layer in summary["layers"]] == MLPSpec().names()
    for layer, arr in zip(summary["layers"], params, strict=True):
        values = arr.astype(np.float64).ravel()
        assert layer["shape"] == list(arr.shape) and layer["count"] == values.size
        assert layer["mean"] == pytest.approx(values.mean()) and layer["std"] == pytest.approx(values.std())
        assert layer["norm"] == pytest.approx(np.linalg.norm(values))
    flat = np.concatenate([p.astype(np.float64).ravel() for p in params])
    counts, edges = np.histogram(flat, bins=len(summary["histogram"]["counts"]))
    assert summary["histogram"]["counts"] == counts.tolist()
    assert summary["histogram"]["edges"] == pytest.approx(edges.tolist())
    assert sum(summary["histogram"]["counts"]) == summary["count"] == MLPSpec().num_params()


def test_dashboard_snapshot_charts_each_nodes_update_norm_and_loss_per_round(api, make_experiment, register,
                                                                           uploader):
    make_experiment(name="default", total_nodes=2, min_nodes=2)
    tokens = {node: register(node) for node in ("a", "b")}
    for i, token in enumerate(tokens.values()):
        response = uploader(token, 1, params_for(10 + i), 10 * (i + 1), experiment="default",
                            metrics={"loss": 0.5 + i, "loss_before": 0.9 + i})
        assert response.status_code == 201, response.content
    uploader(tokens["a"], 2, params_for(20), 10, experiment="default", metrics={"loss": 0.25})

    snapshot = api.get("/api/dashboard").json()

    charts = snapshot["charts"]
    assert charts["rounds"] == [1, 2]
    stored = {(u.round.number, u.node.node_id): u for u in Update.objects.select_related("round", "node")}
    assert charts["nodes"]["a"]["delta_norm"] == [stored[(1, "a")].delta_norm, stored[(2, "a")].delta_norm]
    assert charts["nodes"]["b"]["delta_norm"] == [stored[(1, "b")].delta_norm, None]
    assert charts["nodes"]["a"]["loss"] == [0.5, 0.25] and charts["nodes"]["b"]["loss"] == [1.5, None]
    closed = snapshot["rounds"][0]
    assert closed["status"] == "closed"
    assert charts["round_metrics"]["loss"] == [closed["metrics"]["loss"], None]
    assert charts["round_metrics"]["loss_before"] == [closed["metrics"]["loss_before"], None]
    assert not {"num_examples", "num_results", "aggregation_seconds"} & set(charts["round_metrics"])
    assert snapshot["model"]["version"] == 1 and snapshot["model"]["summary"]["norm"] == pytest.approx(
        np.linalg.norm(np.concatenate([p.astype(np.float64).ravel() for p in _download(api, 1)])))


def test_dashboard_snapshot_lists_nodes_with_what_the_page_needs_to_age_them(api, make_experiment, register,
                                                                           settings):
    settings.FL_NODE_STALE_S = 7.0
    settings.FL_NODE_OFFLINE_S = 70.0
    make_experiment(name="default")
    register("<script>alert(1)</script>")

    snapshot = api.get("/api/dashboard").json()

    assert snapshot["thresholds"] == {"stale_s": 7.0, "offline_s": 70.0}
    assert snapshot["server"]["now"] and snapshot["server"]["mode"] == "embedded"
    [node] = snapshot["nodes"]
    assert node["node_id"] == "<script>alert(1)</script>" and node["status"] == "online"
    assert node["last_seen"] and node["updates"] == 0 and node["last_round"] is None
    assert node["discovery_alive"] is None


def test_dashboard_snapshot_of_an_unknown_experiment_is_a_404(api, make_experiment):
    make_experiment(name="default")

    response = api.get("/api/dashboard?experiment=nope")

    assert response.status_code == 404 and response.json()["error"] == "unknown_experiment"


def test_dashboard_page_loads_only_files_this_server_serves(make_experiment):
    make_experiment(name="default")

    html = Client().get("/").content.decode()

    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    scripts_and_styles = [a for a in assets if a.endswith((".js", ".css"))]
    assert {"/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css",
            "/static/vendor/chart.umd.min.js"} <= set(scripts_and_styles)
    assert all(a.startswith("/static/") for a in scripts_and_styles)
    assert not re.search(r"https?://", html)
    own = [a for a in scripts_and_styles if not a.startswith("/static/vendor/")]
    assert all(finders.find(a.removeprefix("/static/")) for a in own)
    if not finders.find("vendor/chart.umd.min.js"):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("static/vendor/chart.umd.min.js is missing: run scripts/build_static.sh")
        pytest.skip("static/vendor is not built: run scripts/build_static.sh")


def test_dashboard_is_open_to_everyone_by_default(make_experiment):
    make_experiment(name="default")
    client = Client()

    assert client.get("/").status_code == 200
    assert client.get("/api/dashboard").status_code == 200


def test_dashboard_page_and_api_require_a_login_when_configured(make_experiment, settings):
    settings.FL_DASHBOARD_LOGIN_REQUIRED = True
    make_experiment(name="default")
    client = Client()

    page = client.get("/")
    api = client.get("/api/dashboard")

    assert page.status_code == 302 and page["Location"] == "/admin/login/?next=/"
    assert api.status_code == 401 and api.json()["error"] == "login_required"


def test_dashboard_page_and_api_serve_a_logged_in_user_when_a_login_is_required(make_experiment, settings):
    settings.FL_DASHBOARD_LOGIN_REQUIRED = True
    make_experiment(name="default")
    client = Client()
    client.force_login(get_user_model().objects.create_user("operator", password="not-used-here"))

    page = client.get("/")
    api = client.get("/api/dashboard")

    assert page.status_code == 200 and b"dashboard.js" in page.content
    assert api.status_code == 200 and api.json()["experiment"]["name"] == "default"


def test_the_nodes_table_counts_only_the_shown_experiments_updates(make_experiment, register, uploader):
    from aggregation.dashboard import dashboard_snapshot

    make_experiment(name="exp")
    make_experiment(name="other")
    token = register("n1")
    uploader(token, 1, params_for(7), experiment="exp")

    mine = {n["node_id"]: n for n in dashboard_snapshot("exp")["nodes"]}
    theirs = {n["node_id"]: n for n in dashboard_snapshot("other")["nodes"]}

    assert (mine["n1"]["updates"], mine["n1"]["last_round"]) == (1, 1)
    assert (theirs["n1"]["updates"], theirs["n1"]["last_round"]) == (0, None)
