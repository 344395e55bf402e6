"""Real data through real processes: CSV nodes train end to end, unusable data stops a node with the reason,
and `manage.py demo` trains a digits classifier."""
import re
import subprocess
import sys

import numpy as np
import pytest
import requests

from aggregation.datasets import csv_load
from aggregation.fl.features import Scaling
from aggregation.fl.model import MLPSpec, loss
from aggregation.fl.serde import params_loads
from tests.e2e.conftest import ROOT, free_port, wait_until

pytestmark = pytest.mark.e2e


def write_regression_csv(path, rows: int = 160, seed: int = 0):
    """10 features and a target y = x0 + x1 + x2 + noise, with the target in the middle of the columns."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (rows, 10))
    y = x[:, :3].sum(axis=1) + rng.normal(0, 0.05, rows)
    header = [f"f{i}" for i in range(5)] + ["y"] + [f"f{i}" for i in range(5, 10)]
    lines = [",".join(header)] + [",".join(f"{v:.6f}" for v in [*r[:5], t, *r[5:]]) for r, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_nodes_train_end_to_end_on_a_csv_file(start_server, start_node, tmp_path):
    # Prepare: the default model (10 inputs, regression) fits the file's 10 feature columns
    path = write_regression_csv(tmp_path / "sites.csv")
    url, server = start_server(TOTAL_NODES="2", FL_MIN_NODES="2", FL_MAX_ROUNDS="3", FL_EPOCHS="20",
                               FL_LEARNING_RATE="0.05")

    # Execute
    nodes = [start_node(str(i), url, "--data", f"csv:{path}", "--target", "y", "--partition", "iid",
                        "--num-partitions", "2") for i in (1, 2)]
    procs = [server, *nodes]
    wait_until(lambda: requests.get(f"{url}/status", timeout=5).json()["run_status"] == "finished", 120,
               "three rounds on the CSV", procs)
    wait_until(lambda: all(p.popen.poll() is not None for p in nodes), 60, "the nodes to exit", procs)

    # Assert: every update carried its validation loss, and the federation learned the file's target
    rounds = requests.get(f"{url}/api/rounds", timeout=5).json()["rounds"]
    assert [(r["status"], r["updates"]) for r in rounds] == [("closed", 2)] * 3
    detail = requests.get(f"{url}/api/rounds/3", timeout=5).json()
    assert all({"loss", "loss_before", "val_loss"} <= set(u["metrics"]) for u in detail["updates"])
    assert sorted(u["num_examples"] for u in detail["updates"]) == [64, 64]
    assert rounds[2]["metrics"]["val_loss"] < rounds[0]["metrics"]["val_loss"]
    # CSV data gets the federated statistics too: both nodes reported, and the pooled loss uses their scaling.
    features = requests.get(f"{url}/api/features", timeout=5).json()
    assert features["status"] == "ready" and features["nodes"] == 2 and features["count"] == 128
    ds = csv_load(path, "y")
    x, y = Scaling.from_dict(features).apply(ds.x), ds.y.astype(np.float32)

    def pooled_loss(version: int) -> float:
        body = requests.get(f"{url}/api/models/{version}/download", timeout=10).content
        return loss(MLPSpec(), params_loads(MLPSpec(), body)[0], x, y)

    assert pooled_loss(3) < pooled_loss(0) / 2
    assert [p.popen.returncode for p in nodes] == [0, 0]
    assert "local data csv:sites.csv partition 0/2 (iid, seed 0): 64 train + 16 validation rows" in nodes[0].output()


def test_a_node_whose_data_does_not_fit_the_model_exits_with_the_reason(start_server, start_node):
    # Prepare: the server's model takes 10 inputs; digits have 64
    url, server = start_server(TOTAL_NODES="1", FL_MIN_NODES="1")

    # Execute
    node = start_node("1", url, "--data", "digits")
    wait_until(lambda: node.popen.poll() is not None, 60, "the node to give up", [server, node])

    # Assert: exit status 1, the reason in its log, and no update reached the server
    assert node.popen.returncode == 1
    assert "digits has 64 features but the experiment's model is a regression MLP [10, 64, 1]" in node.output()
    assert requests.get(f"{url}/api/rounds/current", timeout=5).json()["progress"]["received"] == 0


def test_a_csv_with_non_numeric_values_stops_the_node_before_it_contacts_anyone(start_node, tmp_path):
    # Prepare
    path = tmp_path / "bad.csv"
    path.write_text("age,city,label\n31,Lyon,1\n")

    # Execute: the server URL is never used
    node = start_node("1", f"http://127.0.0.1:{free_port()}", "--data", f"csv:{path}", "--target", "label")
    wait_until(lambda: node.popen.poll() is not None, 60, "the node to exit", [node])

    # Assert
    assert node.popen.returncode == 1
    assert "line 2, column 'city': 'Lyon' is not a number" in node.output()


def test_the_demo_trains_a_digits_classifier_and_prints_its_accuracy(tmp_path):
    # Execute
    done = subprocess.run(
        [sys.executable, "manage.py", "demo", "--exit", "--rounds", "4", "--port", str(free_port()), "--dir",
         str(tmp_path / "demo")], cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={"PATH": "/usr/bin:/bin", "DEBUG": "1", "PYTHONUNBUFFERED": "1"},
    )

    # Assert: four rounds, each with the server's test accuracy, and the classifier is far above chance
    assert done.returncode == 0, done.stdout + done.stderr
    accuracies = [float(a) for a in re.findall(r"^round \d: closed, 3 updates, .*test accuracy ([0-9.]+)",
                                               done.stdout, re.M)]
    assert len(accuracies) == 4, done.stdout
    assert accuracies[-1] > 0.8 and accuracies[-1] >= accuracies[0]
    assert "dirichlet:0.5 split of digits and train with fedavg;" in done.stdout
    assert "waiting for nodes: 3 of 3 registered" in done.stdout  # round 1 waits for the nodes: it says so


def test_the_demo_takes_a_strategy_and_refuses_an_unknown_one_with_the_choices(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "manage.py", "demo", "--exit", "--rounds", "1", "--nodes", "2", "--port",
            str(free_port()), "--dir", str(tmp_path / "demo")]

    adam = subprocess.run([*argv, "--strategy", "fedadam", "--strategy-params", '{"eta": 0.05}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, env=env)
    typo = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "FL_STRATEGY": "fedadm", "FL_EPOCHS": "9"})

    assert adam.returncode == 0 and 'train with fedadam {"eta": 0.05}' in adam.stdout, adam.stdout + adam.stderr
    assert re.search(r"^round 1: closed, 2 updates", adam.stdout, re.M)
    assert typo.returncode == 1 and "unknown strategy 'fedadm'; choose one of: fedavg" in typo.stderr
    assert "the demo ignores FL_EPOCHS: it runs its own embedded server" in typo.stderr
