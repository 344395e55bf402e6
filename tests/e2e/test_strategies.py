"""Every strategy drives a real federation: a server selected by FL_STRATEGY and three runnode processes."""
import json

import pytest
import requests

from aggregation.fl.registry import STRATEGIES
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

CASES = [(name, {}) for name in sorted(STRATEGIES)] + [
    ("fedavg", {"dp": {"mode": "adaptive", "noise_multiplier": 0.05, "clip_norm": 1.0}}),
    ("fedprox", {"proximal_mu": 0.1}),
]


@pytest.mark.parametrize(("strategy", "params"), CASES, ids=[f"{n}{'+' + next(iter(p)) if p else ''}"
                                                             for n, p in CASES])
def test_a_federation_completes_rounds_with_each_strategy(start_server, start_node, strategy, params):
    url, server = start_server(TOTAL_NODES="3", FL_MIN_NODES="3", FL_MAX_ROUNDS="2", FL_EPOCHS="2",
                               FL_STRATEGY=strategy, FL_STRATEGY_PARAMS=json.dumps(params))
    nodes = [start_node(n, url) for n in ("1", "2", "3")]

    wait_until(lambda: requests.get(f"{url}/status", timeout=5).json()["run_status"] == "finished", 90,
               f"two {strategy} rounds", [server, *nodes])

    rounds = requests.get(f"{url}/api/rounds", timeout=5).json()["rounds"]
    assert [(r["status"], r["updates"]) for r in rounds] == [("closed", 3), ("closed", 3)]
    assert requests.get(f"{url}/api/experiments", timeout=5).json()[0]["strategy"] == strategy
    if "dp" in params:
        assert rounds[-1]["metrics"]["dp_clip_norm"] > 0
    if "proximal_mu" in params:
        config = requests.get(f"{url}/api/rounds/current", timeout=5).json()["config"]
        assert config["proximal_mu"] == params["proximal_mu"]
