"""FedAdagrad, FedAdam and FedYogi: server-side moments hand-computed for one coordinate."""

import math

import numpy as np
import pytest

from aggregation.fl.fedadagrad import FedAdagrad
from aggregation.fl.fedadam import FedAdam
from aggregation.fl.fedyogi import FedYogi
from aggregation.fl.strategy import FitRes

ETA, TAU = 0.1, 1e-3


def step(strategy, server_round, current, average):
    """One round where every node sent `average`, so FedAvg of the results is exactly that."""
    results = [FitRes([np.array([average], np.float32)], 3), FitRes([np.array([average], np.float32)], 1)]
    new, _ = strategy.aggregate_fit(server_round, [np.array([current], np.float32)], results, [])
    return float(new[0][0])


def f32(x):
    return float(np.float32(x))


def test_fedadam_bias_corrects_its_first_steps():
    # Prepare: beta_1 0.9, beta_2 0.99. Round 1 from 0 with delta 0.5: m = 0.05, v = 0.0025,
    # m_hat = 0.05 / 0.1 = 0.5, v_hat = 0.0025 / 0.01 = 0.25, w = 0 + 0.1 * 0.5 / (0.5 + 1e-3).
    strategy = FedAdam(eta=ETA, tau=TAU, beta_1=0.9, beta_2=0.99)
    w1 = f32(ETA * 0.5 / (0.5 + TAU))
    # Round 2 with delta d = -0.2 from w1: m = 0.9 * 0.05 + 0.1 d, v = 0.99 * 0.0025 + 0.01 d²,
    # bias corrections 1 - 0.9² = 0.19 and 1 - 0.99² = 0.0199.
    d = f32(w1 - 0.2) - w1
    m, v = 0.9 * 0.05 + 0.1 * d, 0.99 * 0.0025 + 0.01 * d * d
    w2 = f32(w1 + ETA * (m / 0.19) / (math.sqrt(v / 0.0199) + TAU))

    # Execute
    got1 = step(strategy, 1, 0.0, 0.5)
    got2 = step(strategy, 2, got1, f32(w1 - 0.2))

    # Assert
    assert got1 == pytest.approx(w1, rel=1e-6)
    assert got2 == pytest.approx(w2, rel=1e-6)
    assert int(strategy.state_dict()["steps"]) == 2


def test_fedyogi_grows_v_by_at_most_its_share_of_delta_squared_and_shrinks_it_towards_it():
    # Prepare: v starts at tau². Round 1, delta 0.5: tau² < 0.25 so v = tau² + 0.01 * 0.25 and
    # m = 0.05. Round 2, delta 0.01: v > 1e-4 so v decreases by 0.01 * 1e-4.
    strategy = FedYogi(eta=ETA, tau=TAU, beta_1=0.9, beta_2=0.99)
    v1 = TAU**2 + 0.01 * 0.25
    w1 = f32(ETA * 0.05 / (math.sqrt(v1) + TAU))

    # Execute
    got1 = step(strategy, 1, 0.0, 0.5)
    v_after_1 = float(strategy.state_dict()["v.0"][0])
    got2 = step(strategy, 2, got1, f32(got1 + 0.01))
    d = f32(got1 + 0.01) - got1
    v_after_2 = float(strategy.state_dict()["v.0"][0])

    # Assert
    assert got1 == pytest.approx(w1, rel=1e-6)
    assert v_after_1 == pytest.approx(v1, rel=1e-12)
    assert v_after_2 == pytest.approx(v1 - 0.01 * d * d, rel=1e-12)
    assert got2 > got1


def test_fedadagrad_accumulates_squared_deltas_without_momentum_by_default():
    # Prepare: beta_1 0, so m = delta. Round 1: v = tau² + 0.25, step 0.5 / (sqrt(v) + tau).
    # Round 2, same delta 0.5: v = tau² + 0.5, a smaller step than round 1's.
    strategy = FedAdagrad(eta=ETA, tau=TAU)
    w1 = f32(ETA * 0.5 / (math.sqrt(TAU**2 + 0.25) + TAU))

    # Execute
    got1 = step(strategy, 1, 0.0, 0.5)
    got2 = step(strategy, 2, got1, f32(got1 + 0.5))
    d = f32(got1 + 0.5) - got1

    # Assert
    assert got1 == pytest.approx(w1, rel=1e-6)
    expected2 = got1 + ETA * d / (math.sqrt(TAU**2 + 0.25 + d * d) + TAU)
    assert got2 == pytest.approx(expected2, rel=1e-6)
    assert got2 - got1 < got1


@pytest.mark.parametrize("cls", [FedAdagrad, FedAdam, FedYogi])
def test_adaptive_optimisers_send_eta_l_as_the_node_learning_rate_only_when_set(cls):
    assert cls().configure_fit(1) == {}
    assert cls(eta_l=0.05).configure_fit(3) == {"learning_rate": 0.05}


@pytest.mark.parametrize("cls", [FedAdagrad, FedAdam, FedYogi])
def test_adaptive_optimisers_do_not_move_coordinates_no_node_moved(cls):
    # tau > 0 keeps 0 / (sqrt(0) + tau) finite where the pseudo-gradient is always zero
    strategy = cls()
    current = [np.array([1.0, 2.0], np.float32)]
    results = [FitRes([np.array([1.0, 3.0], np.float32)], 1)]

    new, _ = strategy.aggregate_fit(1, current, results, [])

    assert new[0][0] == 1.0 and new[0][1] > 2.0


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (FedAdam, {"eta": 0}, "eta must be a positive number, got 0"),
        (FedAdam, {"eta_l": -1.0}, "eta_l must be a positive number"),
        (FedAdam, {"beta_1": 1.0}, r"beta_1 must be a number in \[0, 1\)"),
        (FedYogi, {"beta_2": 1.5}, r"beta_2 must be a number in \[0, 1\)"),
        (FedYogi, {"tau": 0.0}, "tau must be a positive number"),
        (FedAdagrad, {"tau": "1e-3"}, "tau must be a positive number, got '1e-3'"),
    ],
)
def test_adaptive_optimisers_reject_bad_hyperparameters_with_a_sentence(cls, params, message):
    with pytest.raises(ValueError, match=message):
        cls(**params)


def test_fedadagrad_does_not_take_beta_2_which_it_would_ignore():
    with pytest.raises(TypeError):
        FedAdagrad(beta_2=0.9)


def test_fedadam_refuses_a_partial_state():
    with pytest.raises(ValueError, match="needs m, v and steps together"):
        FedAdam().load_state({"m.0": np.zeros(1), "steps": np.array(1)})
