"""The examples' local data: node NODE_ID's share of scikit-learn's digits (8x8 images, 10 classes).

Each node holds a different shuffle-split slice and keeps 20% of it for federated evaluation, so the
server never sees a single image. NUM_NODES (default 3) says how many slices there are.
"""

import os

import numpy as np
from sklearn.datasets import load_digits


def load_partition(node_id: int | None = None, num_nodes: int | None = None, seed: int = 0):
    """(x_train, y_train, x_test, y_test) of this node: pixels scaled to [0, 1] as float32, labels int64."""
    node_id = int(node_id if node_id is not None else os.environ.get("NODE_ID", "1"))
    num_nodes = int(num_nodes if num_nodes is not None else os.environ.get("NUM_NODES", "3"))
    if not 1 <= node_id <= num_nodes:
        raise ValueError(f"node id {node_id} is not in 1..{num_nodes} (set NUM_NODES)")
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    part = np.array_split(order, num_nodes)[node_id - 1]
    x = (digits.data[part] / 16.0).astype(np.float32)
    y = digits.target[part].astype(np.int64)
    cut = int(len(part) * 0.8)
    return x[:cut], y[:cut], x[cut:], y[cut:]
