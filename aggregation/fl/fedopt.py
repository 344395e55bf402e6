"""The shared server-optimiser loop of FedAdagrad, FedAdam and FedYogi (adaptive federated optimisation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import as_float64, fit_metrics
from aggregation.fl.checks import check_number
from aggregation.fl.fedavg import FedAvg
from aggregation.fl.strategy import FitRes, check_state_keys, check_state_like, layers_from_state, layers_state


class FedOpt(FedAvg):
    """Base of the adaptive server optimisers of Reddi et al., "Adaptive Federated Optimization", ICLR 2021.

    Each round, with the pseudo-gradient Δ = FedAvg(results) − current:
    m ← beta_1·m + (1 − beta_1)·Δ, v ← second_moment(v, Δ), w ← current + eta·m / (√v + tau).
    eta_l, when set, is sent to nodes as their learning rate. m, v and the step count are the state.
    Subclasses define `second_moment` and may rescale the step (FedAdam's bias correction).
    """

    name = "fedopt"
    v_init_tau_squared = True  # Reddi et al. start v at tau² (Algorithm 2: v_{-1} ≥ tau²)

    def __init__(
        self,
        *,
        min_results: int = 1,
        eta: float = 0.01,
        eta_l: float | None = None,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        super().__init__(min_results=min_results)
        self.eta = check_number("eta", eta, 0, low_open=True)
        self.eta_l = None if eta_l is None else check_number("eta_l", eta_l, 0, low_open=True)
        self.beta_1 = check_number("beta_1", beta_1, 0, 1, high_open=True)
        self.beta_2 = check_number("beta_2", beta_2, 0, 1, high_open=True)
        # tau > 0 keeps the step finite where a coordinate has never moved (v = 0).
        self.tau = check_number("tau", tau, 0, low_open=True)
        self.m: NDArrays | None = None
        self.v: NDArrays | None = None
        self.steps = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_results={self.min_results}, eta={self.eta}, eta_l={self.eta_l}, "
            f"beta_1={self.beta_1}, beta_2={self.beta_2}, tau={self.tau})"
        )

    def configure_fit(self, server_round: int) -> dict[str, Any]:
        return {} if self.eta_l is None else {"learning_rate": self.eta_l}

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        """Update v in place from the pseudo-gradient."""
        raise NotImplementedError

    def step_scale(self) -> tuple[float, float]:
        """Factors applied to m and v before the step (1, 1 unless the subclass corrects a bias)."""
        return 1.0, 1.0

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.m is None or self.v is None:
            return {}
        return {**layers_state("m", self.m), **layers_state("v", self.v), "steps": np.array(self.steps, np.int64)}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        check_state_keys(self.name, state, ("m", "v", "steps"))
        m, v = layers_from_state(state, "m"), layers_from_state(state, "v")
        if len({m is None, v is None, "steps" not in state}) > 1:
            raise ValueError(f"the saved state of {self.name!r} needs m, v and steps together")
        self.m, self.v = m, v
        self.steps = int(state["steps"]) if m is not None else 0

    def step_from_mean(
        self, server_round: int, parameters: NDArrays, average: NDArrays, results: list[FitRes]
    ) -> tuple[NDArrays | None, dict[str, float]]:
        current = as_float64(parameters)
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(layer) for layer in current]
            start = self.tau**2 if self.v_init_tau_squared else 0.0
            self.v = [np.full_like(layer, start) for layer in current]
        check_state_like("first moment", self.m, current)
        check_state_like("second moment", self.v, current)
        self.steps += 1
        m_scale, v_scale = self.step_scale()
        new: NDArrays = []
        for layer, avg, m, v in zip(current, average, self.m, self.v):
            delta = avg - layer
            m *= self.beta_1
            m += (1.0 - self.beta_1) * delta
            self.second_moment(v, delta)
            step = self.eta * (m * m_scale) / (np.sqrt(v * v_scale) + self.tau)
            new.append((layer + step).astype(np.float32))
        return new, fit_metrics(results)
