"""Synthetic data for demos and tests: the prototype's regression task y = x0 + x1 + x2."""

import numpy as np


def synthetic_regression(
    seed: int, n: int = 100, features: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Return x of shape (n, features) uniform in [-1, 1) and y = x0 + x1 + x2 of shape (n, 1)."""
    if n < 1:
        raise ValueError(f"synthetic data needs at least one sample, got n={n}")
    if features < 3:
        raise ValueError(
            f"the target uses the first three features, so features must be at least 3, got {features}"
        )
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, features)).astype(np.float32)
    y = x[:, :3].sum(axis=1, keepdims=True, dtype=np.float32)
    return x, y
