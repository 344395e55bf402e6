"""FedAvg with server momentum: the averaged update is applied through a momentum buffer."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import as_float64, fit_metrics
from aggregation.fl.checks import check_number
from aggregation.fl.fedavg import FedAvg
from aggregation.fl.strategy import FitRes, check_state_keys, check_state_like, layers_from_state, layers_state


class FedAvgM(FedAvg):
    """Federated Averaging with Server Momentum.

    Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
    Classification", 2019 (arXiv:1909.06335).

    With the pseudo-gradient Δ = current − FedAvg(results): v ← momentum·v + Δ, then
    w ← current − server_learning_rate·v. With momentum 0 and server_learning_rate 1 this is FedAvg.
    The buffer v starts at zero and is the strategy's state.
    """

    name = "fedavgm"

    def __init__(self, *, min_results: int = 1, server_learning_rate: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__(min_results=min_results)
        self.server_learning_rate = check_number("server_learning_rate", server_learning_rate, 0, low_open=True)
        self.momentum = check_number("momentum", momentum, 0, 1, high_open=True)
        self.velocity: NDArrays | None = None

    def __repr__(self) -> str:
        return (
            f"FedAvgM(min_results={self.min_results}, server_learning_rate={self.server_learning_rate}, "
            f"momentum={self.momentum})"
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return layers_state("velocity", self.velocity)

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        check_state_keys(self.name, state, ("velocity",))
        self.velocity = layers_from_state(state, "velocity")

    def step_from_mean(
        self, server_round: int, parameters: NDArrays, average: NDArrays, results: list[FitRes]
    ) -> tuple[NDArrays | None, dict[str, float]]:
        current = as_float64(parameters)
        if self.velocity is None:
            self.velocity = [np.zeros_like(layer) for layer in current]
        check_state_like("momentum buffer", self.velocity, current)
        new: NDArrays = []
        for layer, avg, v in zip(current, average, self.velocity):
            v *= self.momentum
            v += layer - avg  # the pseudo-gradient points from the average back to the current model
            new.append((layer - self.server_learning_rate * v).astype(np.float32))
        metrics = fit_metrics(results)
        metrics["momentum_norm"] = float(np.sqrt(sum(float(np.vdot(v, v)) for v in self.velocity)))
        return new, metrics
