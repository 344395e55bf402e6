"""Federated feature statistics with real processes: three `runnode --data digits` nodes report their sums before
round 1, the server fixes one scaling, and the models they train are bit for bit the ones `simulate` trains."""
import subprocess
import sys

import numpy as np
import pytest
import requests

from aggregation.datasets import nodes_data_load
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import params_loads, params_sha256
from tests.e2e.conftest import ROOT, wait_until

pytestmark = pytest.mark.e2e

SERVER = {"TOTAL_NODES": "3", "FL_MIN_NODES": "3", "FL_MAX_ROUNDS": "2", "FL_MODEL_TASK": "classification",
          "FL_MODEL_LAYERS": "64,16,10", "FL_EPOCHS": "1", "FL_LEARNING_RATE": "0.05", "FL_BATCH_SIZE": "10",
          "FL_SERVER_EVAL": "digits", "FL_SEED": "3"}
NODE = ("--data", "digits", "--partition", "shards:2", "--num-partitions", "3", "--seed", "3", "--val-fraction", "0")
# Prints the parameters' digest of version 2 and round 2's test accuracy of the newest experiment.
READ_BACK = """
from aggregation.models import Experiment
from aggregation.fl.serde import params_sha256
from aggregation.selectors import version_parameters
from aggregation.services import experiment_spec
e = Experiment.objects.order_by("-created_at").first()
v = e.versions.get(version=2)
acc = e.rounds.get(number=2).metrics["test_accuracy"]
print("RESULT", params_sha256(experiment_spec(e), version_parameters(v.pk, v.sha256)), acc)
"""


def test_runnode_processes_share_one_scaling_and_train_what_simulate_trains(start_server, start_node, e2e_env,
                                                                           tmp_path):
    # Prepare
    url, server = start_server(**SERVER)

    # Execute: three real nodes, then the same federation simulated in another data directory
    nodes = [start_node(str(i), url, *NODE) for i in (1, 2, 3)]
    procs = [server, *nodes]
    wait_until(lambda: requests.get(f"{url}/status", timeout=5).json()["run_status"] == "finished", 180,
               "two rounds with three digits nodes", procs)
    sim_env = {**e2e_env, "FL_DATA_DIR": str(tmp_path / "sim")}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=sim_env, check=True)
    subprocess.run([sys.executable, "manage.py", "simulate", "--nodes", "3", "--rounds", "2", "--data", "digits",
                    "--partition", "shards:2", "--seed", "3", "--hidden", "16", "--epochs", "1", "--learning-rate",
                    "0.05", "--batch-size", "10", "--val-fraction", "0", "--name", "same"], cwd=ROOT, env=sim_env,
                   check=True, capture_output=True, timeout=120)
    shell = subprocess.run([sys.executable, "manage.py", "shell", "-c", READ_BACK], cwd=ROOT, env=sim_env,
                           check=True, capture_output=True, text=True, timeout=60)
    simulated = shell.stdout.split("RESULT")[-1].split()

    # Assert: the scaling is the pooled statistics of the three nodes' raw rows (no row left a node)...
    features = requests.get(f"{url}/api/features", timeout=5).json()
    raw = nodes_data_load("digits", partitioning="shards:2", num_partitions=3, seed=3, val_fraction=0)
    pooled = np.concatenate([d.x_train for d in raw])
    assert features["status"] == "ready" and features["scaling"] == "global" and features["nodes"] == 3
    assert features["count"] == len(pooled)
    np.testing.assert_allclose(features["shift"], pooled.mean(axis=0), rtol=1e-9, atol=1e-12)
    assert all("feature statistics of" in n.output() and "features scaled (global)" in n.output() for n in nodes)
    # ...every round was scored by the server with it, and simulate reproduced the federation bit for bit.
    rounds = requests.get(f"{url}/api/rounds", timeout=5).json()["rounds"]
    assert [(r["status"], r["updates"]) for r in rounds] == [("closed", 3)] * 2
    body = requests.get(f"{url}/api/models/2/download", timeout=10).content
    spec = MLPSpec((64, 16, 10), "classification")
    assert simulated[0] == params_sha256(spec, params_loads(spec, body)[0])
    assert float(simulated[1]) == rounds[1]["metrics"]["test_accuracy"]
    wait_until(lambda: all(n.popen.poll() is not None for n in nodes), 60, "the nodes to exit", procs)
    assert [n.popen.returncode for n in nodes] == [0, 0, 0]
