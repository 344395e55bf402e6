"""FedAvgM: server momentum on the averaged update, hand-computed over two rounds."""

import numpy as np
import pytest

from aggregation.fl.fedavg import FedAvg
from aggregation.fl.fedavgm import FedAvgM
from aggregation.fl.strategy import AggregationError, FitRes


def results_at(*pairs):
    return [FitRes([np.array([value], dtype=np.float32)], n) for value, n in pairs]


def test_fedavgm_applies_the_momentum_buffer_over_two_rounds():
    # Prepare: lr 0.5, momentum 0.5, current 1.0.
    # Round 1: average (0 * 1 + 2 * 3) / 4 = 1.5, pseudo-gradient 1 - 1.5 = -0.5, v = -0.5,
    #          w = 1 - 0.5 * -0.5 = 1.25.
    # Round 2: average 2.25, pseudo-gradient 1.25 - 2.25 = -1, v = 0.5 * -0.5 - 1 = -1.25,
    #          w = 1.25 + 0.5 * 1.25 = 1.875.
    strategy = FedAvgM(server_learning_rate=0.5, momentum=0.5)

    # Execute
    first, metrics = strategy.aggregate_fit(1, [np.array([1.0], np.float32)], results_at((0.0, 1), (2.0, 3)), [])
    second, _ = strategy.aggregate_fit(2, first, results_at((2.25, 5)), [])

    # Assert
    assert first[0].tolist() == [1.25] and first[0].dtype == np.float32
    assert metrics["momentum_norm"] == pytest.approx(0.5)
    assert second[0].tolist() == [1.875]
    assert strategy.state_dict()["velocity.0"].tolist() == [-1.25]


def test_fedavgm_without_momentum_and_with_unit_rate_is_fedavg():
    # Prepare
    rng = np.random.default_rng(0)
    current = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    results = [FitRes([layer + rng.normal(size=layer.shape).astype(np.float32) for layer in current], n)
               for n in (3, 7, 1)]

    # Execute
    plain, _ = FedAvg().aggregate_fit(1, current, results, [])
    momentum, _ = FedAvgM(momentum=0.0, server_learning_rate=1.0).aggregate_fit(1, current, results, [])

    # Assert
    for a, b in zip(plain, momentum):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_fedavgm_state_is_empty_before_the_first_round_and_restores_the_buffer():
    # Prepare
    first = FedAvgM(momentum=0.9)
    assert first.state_dict() == {}
    current = [np.array([1.0], np.float32)]
    after_one, _ = first.aggregate_fit(1, current, results_at((3.0, 1)), [])

    # Execute
    resumed = FedAvgM(momentum=0.9)
    resumed.load_state(first.state_dict())
    expected, _ = first.aggregate_fit(2, after_one, results_at((4.0, 1)), [])
    got, _ = resumed.aggregate_fit(2, after_one, results_at((4.0, 1)), [])
    fresh, _ = FedAvgM(momentum=0.9).aggregate_fit(2, after_one, results_at((4.0, 1)), [])

    # Assert: the buffer matters, and the resumed strategy continues exactly
    assert got[0].tolist() == expected[0].tolist() != fresh[0].tolist()


def test_fedavgm_refuses_a_buffer_shaped_unlike_the_model():
    strategy = FedAvgM()
    strategy.load_state({"velocity.0": np.zeros(2)})

    with pytest.raises(AggregationError, match="saved momentum buffer has shapes"):
        strategy.aggregate_fit(1, [np.zeros(3, np.float32)], [FitRes([np.ones(3, np.float32)], 1)], [])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\), got 1.0"),
        ({"momentum": -0.1}, r"momentum must be a number in \[0, 1\)"),
        ({"server_learning_rate": 0}, "server_learning_rate must be a positive number, got 0"),
        ({"server_learning_rate": float("nan")}, "server_learning_rate must be a positive number"),
        ({"server_learning_rate": True}, "server_learning_rate must be a positive number, got True"),
        ({"min_results": 0}, "min_results must be a positive integer, got 0"),
    ],
)
def test_fedavgm_rejects_bad_hyperparameters_with_a_sentence(params, message):
    with pytest.raises(ValueError, match=message):
        FedAvgM(**params)


def test_fedavgm_rejects_a_state_of_another_strategy():
    with pytest.raises(ValueError, match="cannot use the saved state entries m.0, steps"):
        FedAvgM().load_state({"m.0": np.zeros(1), "steps": np.array(1)})
