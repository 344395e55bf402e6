"""Headless Chromium watches a real server while nodes upload: the page moves without a reload, node text stays text.

Debian's /usr/bin/chromium driven by Playwright (never `playwright install`); screenshots go to test-artifacts/.
"""
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from aggregation.fl.data import synthetic_regression
from aggregation.fl.model import MLPSpec, loss, train
from aggregation.fl.serde import params_dumps, params_loads
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
ARTIFACTS = ROOT / "test-artifacts"
XSS = "<script>alert(1)</script>"
ENROLLMENT = {"X-Enrollment-Token": "e2e-enrollment"}
STALE_S = 4


def _require(condition: bool, reason: str) -> None:
    """Under CI a missing browser fails the test; on a developer machine it is skipped with the reason."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the browser test must not be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _require(sync_playwright is not None, "playwright is not installed: pip install -r requirements/dev.txt")
    _require(Path(CHROMIUM).exists(), "Chromium is not installed: apt-get install -y chromium")
    _require((ROOT / "static/vendor/chart.umd.min.js").exists(), "static/vendor is not built: scripts/build_static.sh")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A page plus everything it raised: dialogs (alert() would land here) and uncaught errors."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        # The page is served with a Content-Security-Policy: anything it refuses is a console error.
        self.page.on("console", lambda msg: msg.type == "error" and "Content Security Policy" in msg.text
                     and self.errors.append(msg.text))


@pytest.fixture
def watch(browser: Any) -> Iterator[Any]:
    opened: list[Watched] = []

    def open_page(**context: Any) -> Watched:
        opened.append(Watched(browser, **context))
        return opened[-1]

    yield open_page
    for watched in opened:
        watched.context.close()


def _register(url: str, node_id: str) -> str:
    response = requests.post(f"{url}/api/nodes/register", json={"node_id": node_id, "address": ""},
                             headers=ENROLLMENT, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def _train_and_upload(url: str, token: str, number: int, seed: int) -> requests.Response:
    """What a node does, with a learning rate ten times the default: this node's updates stand out."""
    spec = MLPSpec()
    base = params_loads(spec, requests.get(f"{url}/api/models/latest/download", timeout=10).content)[0]
    x, y = synthetic_regression(seed)
    new, after = train(spec, base, x, y, epochs=10, learning_rate=0.1, seed=seed)
    metrics = {"loss": after, "loss_before": loss(spec, base, x, y)}
    metadata = {"num_examples": str(len(x)), "metrics": json.dumps(metrics)}
    return requests.post(f"{url}/api/rounds/{number}/updates", data=params_dumps(spec, new, metadata), timeout=10,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})


def _chart(page: Any, canvas_id: str) -> dict[str, list]:
    return page.evaluate("""(id) => {
        const chart = Chart.getChart(document.getElementById(id));
        return Object.fromEntries(chart.data.datasets.map((d) => [d.label, d.data]));
    }""", canvas_id)


def _screenshot(page: Any, name: str, **options: Any) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **options)
    print(f"screenshot: {path}")
    return path


def test_dashboard_follows_a_federation_live_and_shows_node_ids_as_text(start_server, start_node, watch):
    from playwright.sync_api import expect

    url, server = start_server(TOTAL_NODES="2", FL_MIN_NODES="2", FL_NODE_STALE_S=str(STALE_S),
                               FL_NODE_OFFLINE_S="600")
    laptop = watch(viewport={"width": 1366, "height": 900})
    page = laptop.page
    response = page.goto(url)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("#round-number")).to_have_text("Round 1")
    expect(page.locator("#connection")).to_have_text("live")
    page.evaluate("window.__sameDocument = true")
    status = page.locator(f'#nodes tbody tr[data-node="{XSS}"] td.status')

    token = _register(url, XSS)
    expect(status).to_have_text("online", timeout=15_000)
    expect(status).to_have_text("stale", timeout=15_000)
    assert _train_and_upload(url, token, 1, seed=7).status_code == 201
    expect(page.locator("#round-progress")).to_have_text("1 of 2 nodes uploaded")
    expect(status).to_have_text("online")
    node = start_node("1", url, "--seed", "101", "--poll-wait", "1")
    expect(page.locator("#round-number")).to_have_text("Round 2", timeout=60_000)
    assert _train_and_upload(url, token, 2, seed=8).status_code == 201
    expect(page.locator("#round-number")).to_have_text("Round 3", timeout=60_000)
    page.wait_for_function("() => (Chart.getChart(document.getElementById('chart-loss')).data.datasets[0]?.data ?? [])"
                           ".filter((v) => v !== null).length === 2")
    expect(status).to_have_text("stale", timeout=15_000)

    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    snapshot = requests.get(f"{url}/api/dashboard", timeout=10).json()
    id_cell = page.locator(f'#nodes tbody tr[data-node="{XSS}"] td.node-id')
    assert id_cell.text_content() == XSS and "&lt;script&gt;" in id_cell.inner_html()
    assert page.evaluate("document.querySelectorAll('body script:not([src])').length") == 0
    assert laptop.dialogs == [] and laptop.errors == []
    loss_chart, norms_chart = _chart(page, "chart-loss"), _chart(page, "chart-norms")
    metrics = snapshot["charts"]["round_metrics"]
    assert snapshot["charts"]["groups"]["loss"] == ["loss", "loss_before"]
    assert loss_chart == {"training loss": metrics["loss"], "loss before local training": metrics["loss_before"]}
    assert norms_chart == {n: series["delta_norm"] for n, series in snapshot["charts"]["nodes"].items()}
    assert set(norms_chart) == {XSS, "1"} and all(v is not None for v in norms_chart[XSS][:2] + norms_chart["1"][:2])
    assert sum(_chart(page, "chart-hist")["parameters"]) == MLPSpec().num_params()
    assert page.locator("#model-version").text_content() == "v2"
    assert node.popen.poll() is None, node.output()[-2000:]
    _screenshot(page, "dashboard.png", full_page=True)

    phone = watch(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2)
    phone.page.goto(url)
    expect(phone.page.locator("#round-number")).to_have_text("Round 3")
    expect(phone.page.locator("#connection")).to_have_text("live")
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390, "the phone layout scrolls sideways"
    _screenshot(phone.page, "dashboard-phone.png")
    assert phone.dialogs == [] and phone.errors == []


def test_dashboard_polls_while_its_websocket_is_down_and_goes_live_again(start_server, watch):
    from playwright.sync_api import expect

    url, _ = start_server(TOTAL_NODES="2", FL_MIN_NODES="2")
    sockets = {"allow": False, "refused": 0}

    def route(socket: Any) -> None:
        if sockets["allow"]:
            socket.connect_to_server()
        else:
            sockets["refused"] += 1
            socket.close()

    watched = watch()
    page = watched.page
    page.route_web_socket(re.compile(r"/ws/dashboard/"), route)
    page.goto(url)
    expect(page.locator("#connection")).to_have_text("polling")
    token = _register(url, "p1")

    assert _train_and_upload(url, token, 1, seed=3).status_code == 201
    expect(page.locator("#round-progress")).to_have_text("1 of 2 nodes uploaded", timeout=15_000)
    refused = sockets["refused"]
    sockets["allow"] = True
    expect(page.locator("#connection")).to_have_text("live", timeout=40_000)

    assert refused >= 1
    assert watched.errors == []
    assert page.locator("#round-nodes li").all_text_contents() == ["p1"]


def _digits_run_env(**overrides: str) -> dict[str, str]:
    """A server whose experiments train a digits classifier that the server scores on its held-out test set."""
    return {"FL_MODEL_LAYERS": "64,32,10", "FL_MODEL_TASK": "classification", "FL_SERVER_EVAL": "digits",
            "TOTAL_NODES": "2", "FL_MIN_NODES": "2", "FL_MAX_ROUNDS": "3", "FL_EPOCHS": "5",
            "FL_LEARNING_RATE": "0.1", "FL_BATCH_SIZE": "32", "FL_NODE_STALE_S": "2", "FL_NODE_OFFLINE_S": "4",
            **overrides}


def _statuses(url: str) -> dict[str, str]:
    return {e["name"]: e["status"] for e in requests.get(f"{url}/api/experiments", timeout=10).json()}


def test_dashboard_compares_fedavg_with_fedadam_accuracy_apart_from_losses_and_shows_nodes_done(
        start_server, start_node, watch, e2e_env):
    from playwright.sync_api import expect

    from tests.e2e.conftest import wait_until

    env = _digits_run_env(FL_EXPERIMENT="fedavg")
    url, server = start_server(**env)
    subprocess.run([sys.executable, "manage.py", "createexperiment", "fedadam", "--strategy", "fedadam",
                    "--strategy-params", '{"eta": 0.05}'], cwd=ROOT, env={**e2e_env, **env}, check=True,
                   capture_output=True)
    nodes = [start_node(f"{name[3:]}{part + 1}", url, "--experiment", name, "--data", "digits", "--partition",
                        "shards:2", "--num-partitions", "2", "--partition-id", str(part), "--poll-wait", "1")
             for name in ("fedavg", "fedadam") for part in range(2)]
    wait_until(lambda: _statuses(url) == {"fedavg": "finished", "fedadam": "finished"}, 120,
               "both runs to finish", [server, *nodes])
    wait_until(lambda: all(n.popen.poll() is not None for n in nodes), 60, "the nodes to exit", nodes)
    assert [n.popen.returncode for n in nodes] == [0, 0, 0, 0], [n.output()[-1500:] for n in nodes]

    laptop = watch(viewport={"width": 1366, "height": 900})
    page = laptop.page
    page.goto(f"{url}/?experiment=fedavg")
    expect(page.locator("#connection")).to_have_text("live")

    # The server card says the run finished; both runs are in the switcher.
    expect(page.locator("#server-status")).to_have_text("finished")
    expect(page.locator("#run-status")).to_have_text("3 of 3 rounds done")
    options = page.locator("#experiment-select option")
    assert [o.split(" · ")[:3] for o in options.all_text_contents()] == [["fedadam", "fedadam", "finished"],
                                                                        ["fedavg", "fedavg", "finished"]]
    assert page.locator("#experiment-select").input_value() == "fedavg"
    # Test accuracy on its own 0-1 axis; losses on another.
    snapshot = requests.get(f"{url}/api/dashboard?experiment=fedavg", timeout=10).json()
    metrics = snapshot["charts"]["round_metrics"]
    accuracy = _chart(page, "chart-accuracy")
    assert accuracy == {"test accuracy (server's test set)": metrics["test_accuracy"],
                        "validation accuracy (nodes' own split)": metrics["val_accuracy"]}
    assert len(metrics["test_accuracy"]) == 3 and all(0 <= v <= 1 for v in metrics["test_accuracy"])
    assert page.evaluate("(() => { const y = Chart.getChart(document.getElementById('chart-accuracy')).scales.y;"
                         " return [y.min, y.max]; })()") == [0, 1]
    losses = _chart(page, "chart-loss")
    assert set(losses) == {"training loss", "loss before local training", "test loss (server's test set)",
                           "validation loss (nodes' own split)"}
    assert not any("accuracy" in label for label in losses)
    page.check("#loss-log")
    assert page.evaluate("Chart.getChart(document.getElementById('chart-loss')).scales.y.type") == "logarithmic"
    # The run's parameters beside the charts.
    rows = page.evaluate("""[...document.querySelectorAll('#run-params tbody tr')]
        .map((tr) => [...tr.cells].map((c) => c.textContent))""")
    assert {len(row) for row in rows} == {2}, rows  # the parameter and this run's value
    params = dict(rows)
    assert params["strategy"] == "fedavg" and params["epochs"] == "5" and params["learning rate"] == "0.1"
    assert params["partition"] == "shards:2" and params["data"] == "digits"
    assert params["nodes"] == "2 (2 per round, quorum 2)" and params["rounds"] == "3 of 3"
    # Nodes that finished cleanly are done, and only this experiment's nodes are listed.
    node_rows = page.locator("#nodes tbody tr")
    expect(node_rows).to_have_count(2)
    assert [tr.get_attribute("data-node") for tr in node_rows.all()] == ["avg1", "avg2"]
    expect(page.locator("#nodes tbody td.status")).to_have_text(["done", "done"])
    page.wait_for_timeout(4500)  # past FL_NODE_OFFLINE_S: a done node does not age to stale or offline
    expect(page.locator("#nodes tbody td.status")).to_have_text(["done", "done"])
    assert {n["node_id"]: n["status"] for n in requests.get(f"{url}/api/nodes", timeout=10).json()} == {
        "avg1": "done", "avg2": "done", "adam1": "done", "adam2": "done"}
    # CSV export of the round metrics, linked from the page.
    csv_href = page.locator("#export-csv").get_attribute("href")
    exported = requests.get(url + csv_href, timeout=10)
    assert csv_href == "/api/rounds?experiment=fedavg&format=csv" and exported.status_code == 200
    header, *rows = exported.text.splitlines()
    assert "test_accuracy" in header.split(",") and len(rows) == 3
    _screenshot(page, "dashboard-run.png", full_page=True)

    # Overlay: FedAdam's curves on the same charts, its parameters beside FedAvg's.
    page.select_option("#compare-select", "fedadam")
    page.wait_for_function("() => window.fedsite.compared()?.experiment.name === 'fedadam'")
    assert page.url.endswith("?experiment=fedavg&compare=fedadam")
    compared = requests.get(f"{url}/api/dashboard?experiment=fedadam", timeout=10).json()["charts"]["round_metrics"]
    overlay = _chart(page, "chart-accuracy")
    fedavg_test, fedadam_test = (overlay[f"{run} · test accuracy (server's test set)"] for run in ("fedavg", "fedadam"))
    assert fedavg_test == metrics["test_accuracy"] and fedadam_test == compared["test_accuracy"]
    assert fedavg_test != fedadam_test
    dashed = page.evaluate("""Chart.getChart(document.getElementById('chart-accuracy')).data.datasets
        .filter((d) => d.borderDash.length).map((d) => d.label)""")
    assert sorted(dashed) == ["fedadam · test accuracy (server's test set)",
                              "fedadam · validation accuracy (nodes' own split)"]
    assert "fedadam · training loss" in _chart(page, "chart-loss")
    expect(page.locator("#params-b")).to_have_text("fedadam")
    compared_params = dict(page.evaluate("""[...document.querySelectorAll('#run-params tbody tr')]
        .map((tr) => [tr.cells[0].textContent, [...tr.cells].slice(1).map((c) => c.textContent)])"""))
    assert compared_params["strategy"] == ["fedavg", "fedadam"] and compared_params["eta"] == ["—", "0.05"]
    _screenshot(page, "dashboard-compare.png", full_page=True)

    # The switcher loads the other experiment and keeps the comparison.
    page.select_option("#experiment-select", "fedadam")
    expect(page.locator("#experiment-name")).to_have_text("fedadam")
    assert page.url.endswith("?experiment=fedadam&compare=fedavg")
    expect(page.locator("#nodes tbody td.node-id")).to_have_text(["adam1", "adam2"])
    assert laptop.dialogs == [] and laptop.errors == []
