"""Two attackers among ten nodes: the robust rules stay near the honest mean, FedAvg does not.

Setup: the model has P = 64 coordinates; the honest update μ has norm 1 and every honest node sends
current + μ + noise with stddev s = 0.01 per coordinate, so one honest update lies about s·√P = 0.08
from the honest mean. Robust rules must stay within 3·s·√P of the honest mean; FedAvg, which gives
each attacker a tenth of the weight, must land at least ||μ|| = 1 away (−10·μ pulls it about 2.2
away; noise of stddev 10 per coordinate about 10·√P·√2/10 ≈ 11).
"""

import numpy as np
import pytest

from aggregation.fl.registry import strategy_create
from aggregation.fl.strategy import FitRes

SHAPES = [(8, 7), (8,)]
P = 64
HONEST, ATTACKERS, NOISE = 8, 2, 0.01
CLOSE = 3 * NOISE * np.sqrt(P)
FAR = 1.0

# The largest f each rule accepts with 10 results: Krum needs n >= 2f + 3, Bulyan n >= 4f + 3.
ROBUST = [
    ("fedmedian", {}),
    ("fedtrimmedavg", {"beta": 0.2}),
    ("krum", {"num_malicious": 2}),
    ("multikrum", {"num_malicious": 2}),
    ("bulyan", {"num_malicious": 1}),
]


def split(flat):
    return [flat[:56].reshape(8, 7).astype(np.float32), flat[56:].astype(np.float32)]


def scenario(attack, seed=11):
    """(current, results, honest mean) with the attackers last."""
    rng = np.random.default_rng(seed)
    current = rng.normal(size=P)
    mu = rng.normal(size=P)
    mu /= np.linalg.norm(mu)
    honest = [current + mu + rng.normal(scale=NOISE, size=P) for _ in range(HONEST)]
    if attack == "scaled":
        # -10 times each attacker's own honest-looking update
        bad = [current - 10 * (mu + rng.normal(scale=NOISE, size=P)) for _ in range(ATTACKERS)]
    else:
        bad = [current + rng.normal(scale=10.0, size=P) for _ in range(ATTACKERS)]
    results = [FitRes(split(v), 100) for v in honest + bad]
    honest_mean = np.mean([np.concatenate([layer.ravel() for layer in r.parameters]) for r in results[:HONEST]],
                          axis=0)
    return split(current), results, honest_mean


def distance(params, target):
    return float(np.linalg.norm(np.concatenate([layer.ravel() for layer in params]).astype(np.float64) - target))


@pytest.mark.parametrize("attack", ["scaled", "noise"])
@pytest.mark.parametrize(("name", "params"), ROBUST, ids=[name for name, _ in ROBUST])
def test_robust_rules_stay_near_the_honest_mean_under_attack(name, params, attack):
    # Prepare
    current, results, honest_mean = scenario(attack)

    # Execute
    new, _ = strategy_create(name, params).aggregate_fit(1, current, results, [])

    # Assert
    assert distance(new, honest_mean) <= CLOSE


@pytest.mark.parametrize("attack", ["scaled", "noise"])
def test_fedavg_is_dragged_away_from_the_honest_mean_by_the_same_attack(attack):
    # Prepare
    current, results, honest_mean = scenario(attack)

    # Execute
    new, _ = strategy_create("fedavg").aggregate_fit(1, current, results, [])

    # Assert
    assert distance(new, honest_mean) >= FAR


@pytest.mark.parametrize("attack", ["scaled", "noise"])
def test_krum_chooses_an_honest_node_and_multikrum_averages_exactly_the_honest_ones(attack):
    # Prepare
    current, results, honest_mean = scenario(attack)
    honest_models = [np.concatenate([layer.ravel() for layer in r.parameters]) for r in results[:HONEST]]

    # Execute
    krum, _ = strategy_create("krum", {"num_malicious": 2}).aggregate_fit(1, current, results, [])
    multi, _ = strategy_create("multikrum", {"num_malicious": 2}).aggregate_fit(1, current, results, [])

    # Assert: n - f = 8 kept, which are the 8 honest results
    chosen = np.concatenate([layer.ravel() for layer in krum])
    assert any(np.array_equal(chosen, model) for model in honest_models)
    assert distance(multi, honest_mean) <= 1e-5
