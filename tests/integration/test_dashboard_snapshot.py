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


def test_the_nodes_table_lists_the_shown_experiments_nodes_with_their_updates_in_it(make_experiment, register,
                                                                                     uploader, api):
    from aggregation.dashboard import dashboard_snapshot

    make_experiment(name="exp")
    make_experiment(name="other")
    n1, n2 = register("n1"), register("n2")
    register("newcomer")  # registered, has done nothing yet: it could join either experiment
    uploader(n1, 1, params_for(7), experiment="exp")
    uploader(n2, 1, params_for(8), experiment="exp")
    uploader(n2, 1, params_for(9), experiment="other")
    api.get("/api/rounds/current?experiment=other", HTTP_AUTHORIZATION=f"Bearer {n2}")  # n2 now works on other

    mine = {n["node_id"]: n for n in dashboard_snapshot("exp")["nodes"]}
    theirs = {n["node_id"]: n for n in dashboard_snapshot("other")["nodes"]}

    assert set(mine) == {"n1", "n2", "newcomer"} and set(theirs) == {"n2", "newcomer"}
    assert (mine["n1"]["updates"], mine["n1"]["last_round"], mine["n1"]["experiment"]) == (1, 1, "exp")
    assert (theirs["n2"]["updates"], theirs["n2"]["experiment"]) == (1, "other")
    assert mine["newcomer"]["experiment"] is None and mine["newcomer"]["updates"] == 0


def _closed_round_with_scores(make_experiment, register, uploader, name="exp", **fields):
    """Round 1 of `name` closed by two nodes that report validation scores; the server adds test and federated ones."""
    from aggregation.models import Round

    make_experiment(name=name, total_nodes=2, min_nodes=2, **fields)
    for i, node in enumerate((f"{name}-a", f"{name}-b")):
        response = uploader(register(node), 1, params_for(i), 10, experiment=name,
                            metrics={"loss": 0.4 + i, "val_accuracy": 0.99, "val_loss": 0.05})
        assert response.status_code == 201, response.content
    rnd = Round.objects.get(experiment__name=name, number=1)
    assert rnd.status == "closed"
    rnd.metrics = {**rnd.metrics, "test_accuracy": 0.35, "test_loss": 1.9, "federated_accuracy": 0.5,
                   "federated_loss": 1.2, "federated_examples": 40, "test_examples": 360}
    rnd.save(update_fields=["metrics"])


def test_accuracies_are_charted_apart_from_losses_with_the_test_accuracy_first(api, make_experiment, register,
                                                                             uploader):
    _closed_round_with_scores(make_experiment, register, uploader)

    charts = api.get("/api/dashboard?experiment=exp").json()["charts"]

    assert charts["groups"] == {"fraction": ["test_accuracy", "federated_accuracy", "val_accuracy"],
                                "loss": ["loss", "test_loss", "federated_loss", "val_loss"], "other": []}
    assert charts["round_metrics"]["test_accuracy"] == [0.35, None]
    assert charts["round_metrics"]["val_accuracy"] == [pytest.approx(0.99), None]


def test_a_metric_named_like_an_accuracy_but_outside_0_to_1_is_not_put_on_the_accuracy_axis():
    from aggregation.dashboard import metric_groups

    groups = metric_groups({"val_accuracy": [0.5, None], "top5_accuracy_pct": [97.0], "r2": [0.3], "mse_loss": [4.0]})

    assert groups == {"fraction": ["val_accuracy"], "loss": ["mse_loss"], "other": ["r2", "top5_accuracy_pct"]}


def test_the_snapshot_lists_every_experiment_and_the_runs_parameters(api, make_experiment, register, uploader):
    _closed_round_with_scores(make_experiment, register, uploader, name="avg")
    make_experiment(name="adam", strategy="fedadam", strategy_params={"eta": 0.05}, epochs=3, learning_rate=0.2,
                    batch_size=32, max_rounds=10)

    snapshot = api.get("/api/dashboard?experiment=adam").json()

    assert snapshot["experiments"] == [
        {"name": "adam", "status": "running", "strategy": "fedadam", "rounds": 0, "max_rounds": 10},
        {"name": "avg", "status": "running", "strategy": "fedavg", "rounds": 1, "max_rounds": 0}]
    card = snapshot["experiment"]
    assert card["strategy_params"]["eta"] == 0.05  # as set
    assert card["strategy_params"]["beta_1"] == 0.9 and card["strategy_params"]["tau"] > 0  # FedAdam's defaults
    assert (card["epochs"], card["learning_rate"], card["batch_size"], card["max_rounds"]) == (3, 0.2, 32, 10)
    assert (card["total_nodes"], card["min_nodes"], card["finish_reason"]) == (3, 2, "")
