"""FedAdam: the server applies the averaged update with Adam's moments, bias-corrected."""

from __future__ import annotations

import numpy as np

from aggregation.fl.fedopt import FedOpt


class FedAdam(FedOpt):
    """FedAdam.

    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and McMahan, "Adaptive Federated
    Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2: v ← beta_2·v + (1 − beta_2)·Δ².

    As in Adam (Kingma and Ba, ICLR 2015) m and v start at zero and are bias-corrected:
    w ← current + eta·m̂ / (√v̂ + tau) with m̂ = m / (1 − beta_1^t), v̂ = v / (1 − beta_2^t), t the step count.
    """

    name = "fedadam"
    v_init_tau_squared = False  # bias correction assumes moments that start at zero

    def __init__(self, *, min_results: int = 1, eta: float = 0.01, eta_l: float | None = None, beta_1: float = 0.9,
                 beta_2: float = 0.99, tau: float = 1e-2) -> None:
        # tau, the adaptivity floor, defaults to 1e-2 here (1e-3 for FedAdagrad and FedYogi), measured with
        # benchmarks/learning.py (digits, 10 nodes, eta 0.1, 100 rounds, seeds 0-2): with 1e-3 a coordinate whose
        # pseudo-gradient is small but steady (a feature constant on most nodes after global centring) moves at
        # nearly the full step eta, which cost 0.7-1.2 points under Dirichlet(0.5); 1e-2 costs none (README).
        super().__init__(min_results=min_results, eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau)

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        v *= self.beta_2
        v += (1.0 - self.beta_2) * delta * delta

    def step_scale(self) -> tuple[float, float]:
        return 1.0 / (1.0 - self.beta_1**self.steps), 1.0 / (1.0 - self.beta_2**self.steps)
