"""FedYogi: the server applies the averaged update with Yogi's sign-controlled second moment."""

from __future__ import annotations

import numpy as np

from aggregation.fl.fedopt import FedOpt


class FedYogi(FedOpt):
    """FedYogi.

    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and McMahan, "Adaptive Federated
    Optimization", ICLR 2021 (arXiv:2003.00295), Algorithm 2: v ← v − (1 − beta_2)·Δ²·sign(v − Δ²).

    Unlike Adam's, v changes by at most (1 − beta_2)·Δ² per round in either direction, so the
    effective learning rate cannot grow suddenly (Zaheer et al., NeurIPS 2018). v starts at tau².
    """

    name = "fedyogi"

    def second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        sq = delta * delta
        v -= (1.0 - self.beta_2) * sq * np.sign(v - sq)
