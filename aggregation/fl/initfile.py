"""A user's initial weights file: version 0 of a model of their own, as a manifest and float32 tensors."""

from __future__ import annotations

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.manifest import Manifest, TensorSpec
from aggregation.fl.serde import FLOAT_NAMES, SerdeError, check_finite, dtype_names, loads, params_from_tensors


def initial_model_loads(buf: bytes | bytearray | memoryview) -> tuple[Manifest, NDArrays]:
    """A user's initial weights file as (manifest, float32 tensors in file order), or a SerdeError saying why not.

    Floating-point tensors of any width are converted to float32 (the manifest keeps the file's
    dtype); integer or boolean tensors, NaN and infinity are refused.
    """
    dtypes = dtype_names(buf)
    tensors, _metadata = loads(buf)
    if not tensors:
        raise SerdeError("the file holds no tensors; a model needs at least one")
    for name, dtype in dtypes.items():
        if dtype not in FLOAT_NAMES:
            raise SerdeError(f"tensor {name!r} is {dtype}; only floating-point tensors ({', '.join(FLOAT_NAMES)}) "
                             "can be federated, so leave integer buffers (e.g. BatchNorm's num_batches_tracked) "
                             "out of the file")
    # Header order is the order the file's writer chose (the reference library sorts by name).
    try:
        manifest = Manifest(tuple(TensorSpec(n, tuple(t.shape), dtypes[n]) for n, t in tensors.items()))
    except ValueError as exc:
        raise SerdeError(str(exc)) from None
    params = params_from_tensors(manifest, tensors)
    check_finite(params, manifest.names())
    return manifest, [np.array(p, dtype=np.float32) for p in params]
