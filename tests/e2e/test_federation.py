"""A real server and three real nodes on loopback run FedAvg rounds by themselves."""
import re

import numpy as np
import pytest
import requests

from aggregation.fl.data import synthetic_regression
from aggregation.fl.model import MLPSpec, loss
from aggregation.fl.serde import params_loads
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e
FINAL = re.compile(r"final model version=(\d+) sha256=([0-9a-f]{64})")


def _model(url: str, version: int):
    body = requests.get(f"{url}/api/models/{version}/download", timeout=10).content
    return params_loads(MLPSpec(), body)[0]


def test_three_nodes_complete_three_rounds_and_agree_on_the_final_model(start_server, start_node):
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="3", FL_MAX_ROUNDS="3")
    seeds = {"1": 101, "2": 102, "3": 103}
    nodes = [start_node(node_id, url, "--seed", str(seed)) for node_id, seed in seeds.items()]
    procs = [server, *nodes]

    wait_until(lambda: requests.get(f"{url}/status", timeout=5).json()["run_status"] == "finished", 120,
               "three rounds to finish", procs)
    exits = [wait_until(lambda p=p: p.popen.poll() is not None, 60, f"{p.name} to exit", procs) for p in nodes]

    rounds = requests.get(f"{url}/api/rounds", timeout=5).json()["rounds"]
    assert [(r["number"], r["status"], r["updates"]) for r in rounds] == [(n, "closed", 3) for n in (1, 2, 3)]
    assert all(code is not None for code in exits) and [p.popen.returncode for p in nodes] == [0, 0, 0]
    latest = requests.get(f"{url}/api/models/latest", timeout=5).json()
    assert latest["version"] == 3
    for node in nodes:
        found = FINAL.findall(node.output())
        assert found, node.output()[-2000:]
        assert found[-1] == ("3", latest["sha256"])
    # The federation learned: the final model beats the shared initial one on the nodes' data.
    xs, ys = zip(*(synthetic_regression(seed) for seed in seeds.values()))
    x, y = np.concatenate(xs), np.concatenate(ys)
    initial, final = loss(MLPSpec(), _model(url, 0), x, y), loss(MLPSpec(), _model(url, 3), x, y)
    assert final < initial
    print(f"pooled loss: v0={initial:.5f} v3={final:.5f}; per round: {[r['metrics'].get('loss') for r in rounds]}")
