"""FedProx: the node's proximal term in model.train, and the server side that sends mu."""

import numpy as np
import pytest

from aggregation.fl.data import synthetic_regression
from aggregation.fl.fedavg import FedAvg
from aggregation.fl.fedprox import FedProx
from aggregation.fl.model import MLPSpec, init_parameters, loss, train
from aggregation.fl.strategy import FitRes

SPEC = MLPSpec((4, 5, 1))


def objective(params, global_params, mu, x, y):
    """loss + (mu/2)·||w − w_global||², in float64."""
    squared = sum(float(np.sum((p - g) ** 2)) for p, g in zip(params, global_params))
    return loss(SPEC, params, x, y) + 0.5 * mu * squared


def test_one_proximal_step_follows_the_numerical_gradient_of_the_proximal_objective():
    # Prepare: one full-batch step with learning rate 1 moves the weights by exactly the gradient.
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (12, 4)).astype(np.float32)
    y = rng.uniform(-1, 1, (12, 1)).astype(np.float32)
    start = [p + rng.normal(0, 0.1, p.shape).astype(np.float32) for p in init_parameters(SPEC, seed=2)]
    global_params = [p + rng.normal(0, 0.5, p.shape).astype(np.float32) for p in start]
    mu = 0.7

    # Execute
    stepped, _ = train(SPEC, start, x, y, epochs=1, learning_rate=1.0, proximal_mu=mu, global_params=global_params)

    # Assert: central differences of the objective in float64 at the start
    base = [p.astype(np.float64) for p in start]
    anchor = [g.astype(np.float64) for g in global_params]
    eps = 1e-6
    for index, p in enumerate(base):
        for flat in range(p.size):
            entry = np.unravel_index(flat, p.shape)
            plus = [q.copy() for q in base]
            minus = [q.copy() for q in base]
            plus[index][entry] += eps
            minus[index][entry] -= eps
            numerical = (objective(plus, anchor, mu, x, y) - objective(minus, anchor, mu, x, y)) / (2 * eps)
            moved = float(start[index][entry]) - float(stepped[index][entry])
            assert moved == pytest.approx(numerical, rel=1e-3, abs=1e-5)


def distance(a, b):
    return float(np.sqrt(sum(np.sum((p.astype(np.float64) - q) ** 2) for p, q in zip(a, b))))


def test_a_larger_mu_keeps_the_local_model_closer_to_the_global_one():
    # Prepare
    spec = MLPSpec()
    global_params = init_parameters(spec, seed=0)
    x, y = synthetic_regression(seed=3, n=50)

    # Execute
    distances = [
        distance(train(spec, global_params, x, y, epochs=30, learning_rate=0.05, proximal_mu=mu)[0], global_params)
        for mu in (0.0, 0.5, 5.0)
    ]

    # Assert
    assert distances[0] > distances[1] > distances[2] > 0


def test_mu_zero_trains_exactly_as_before_and_the_global_model_defaults_to_the_start():
    # Prepare
    spec = MLPSpec()
    start = init_parameters(spec, seed=1)
    elsewhere = [p + 1.0 for p in start]
    x, y = synthetic_regression(seed=1, n=40)

    # Execute
    plain, plain_loss = train(spec, start, x, y, epochs=5)
    zero_mu, zero_loss = train(spec, start, x, y, epochs=5, proximal_mu=0.0, global_params=elsewhere)
    default_anchor, _ = train(spec, start, x, y, epochs=5, proximal_mu=1.0)
    explicit_anchor, _ = train(spec, start, x, y, epochs=5, proximal_mu=1.0, global_params=start)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero_mu)) and plain_loss == zero_loss
    assert all(np.array_equal(a, b) for a, b in zip(default_anchor, explicit_anchor))
    assert not all(np.array_equal(a, b) for a, b in zip(plain, default_anchor))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"proximal_mu": -0.1}, "proximal_mu must be a non-negative number, got -0.1"),
        ({"proximal_mu": float("nan")}, "proximal_mu must be a non-negative number"),
        ({"proximal_mu": 0.1, "global_params": [np.zeros(3)]}, "the model expects 4 parameter tensors, got 1"),
    ],
)
def test_train_rejects_a_bad_proximal_term(kwargs, message):
    x, y = synthetic_regression(seed=0, n=5, features=4)

    with pytest.raises(ValueError, match=message):
        train(SPEC, init_parameters(SPEC, seed=0), x, y, **kwargs)


def test_fedprox_sends_mu_with_every_round_and_aggregates_as_fedavg():
    # Prepare
    rng = np.random.default_rng(0)
    current = [np.zeros((2, 2), np.float32)]
    results = [FitRes([rng.normal(size=(2, 2)).astype(np.float32)], n) for n in (1, 4, 2)]

    # Execute
    strategy = FedProx(proximal_mu=0.25)
    prox, metrics = strategy.aggregate_fit(1, current, results, [])
    avg, _ = FedAvg().aggregate_fit(1, current, results, [])

    # Assert
    assert strategy.configure_fit(1) == strategy.configure_fit(9) == {"proximal_mu": 0.25}
    assert np.array_equal(prox[0], avg[0]) and metrics["num_examples"] == 7
    with pytest.raises(ValueError, match="proximal_mu must be a non-negative number"):
        FedProx(proximal_mu=-1)
