"""Pure-numpy federated learning core: model, strategies, aggregation and parameter codec.

Nothing in this package may import Django; tests/unit/test_fl_is_pure.py enforces that.
"""

import numpy as np

NDArrays = list[np.ndarray]
