"""Checks on one node update before aggregation: structure, finiteness and an optional bound on its size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.checks import check_number

MODES = ("reject", "clip")


# Elements per block of delta_norm: the float64 difference of one block stays in cache.
_BLOCK = 16384


def delta_norm(params: NDArrays, current: NDArrays) -> float:
    """||params − current||₂ over all tensors, computed in float64 block by block (no model-sized temporary)."""
    total = 0.0
    scratch = np.empty(_BLOCK, dtype=np.float64)
    for p, c in zip(params, current):
        p, c = np.ravel(p), np.ravel(c)
        for start in range(0, p.size, _BLOCK):
            diff = scratch[: min(_BLOCK, p.size - start)]
            np.subtract(p[start : start + _BLOCK], c[start : start + _BLOCK], out=diff, dtype=np.float64)
            # square and sum, not np.dot: BLAS's thread pool stalled for seconds inside a busy web server.
            total += float(np.square(diff, out=diff).sum())
    return float(np.sqrt(total))


def _label(names: Sequence[str] | None, position: int) -> str:
    if names is not None and position < len(names):
        return f"tensor {names[position]!r}"
    return f"tensor {position}"


def _check_structure(
    params: NDArrays, current: NDArrays, names: Sequence[str] | None
) -> tuple[NDArrays | None, str | None]:
    if len(params) != len(current):
        return None, f"the update has {len(params)} tensors but the model has {len(current)}"
    checked: NDArrays = []
    for position, (p, c) in enumerate(zip(params, current)):
        label, want = _label(names, position), np.asarray(c)
        try:
            arr = np.asarray(p)
        except (TypeError, ValueError):
            return None, f"{label} is not an array of numbers"
        if arr.dtype.kind != "f":
            return None, f"{label} holds values of type {arr.dtype}, but updates must hold floating-point numbers"
        if arr.shape != want.shape:
            return None, f"{label} has shape {arr.shape} but the model's has shape {want.shape}"
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf and is reported below
            arr = arr.astype(want.dtype, copy=False)
        if not np.isfinite(arr).all():
            return None, f"{label} contains NaN or infinity"
        checked.append(arr)
    return checked, None


def validate_update(
    params: NDArrays,
    current: NDArrays,
    *,
    max_norm: float | None = None,
    mode: str = "reject",  # checked here: it comes from the database or a user
    names: Sequence[str] | None = None,
) -> tuple[NDArrays | None, str | None]:
    """Check an update against the current model; returns (usable update, None) or (None, reason).

    The update must have the model's tensor count and shapes, floating-point values (cast to the
    model's dtype) and no NaN or infinity. With `max_norm`, an update farther than that from the
    current model (L2 norm of the difference) is rejected with mode "reject", or pulled back along
    the difference to exactly that distance (up to the model dtype's rounding) with mode "clip".
    `names` only makes the reasons name the tensors. A bad max_norm or mode raises ValueError.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if max_norm is not None:
        max_norm = check_number("max_norm", max_norm, 0, low_open=True)
    checked, reason = _check_structure(params, current, names)
    if checked is None or max_norm is None:
        return checked, reason
    norm = delta_norm(checked, current)
    if norm <= max_norm:
        return checked, None
    if mode == "reject":
        return None, (
            f"the update is {norm:.6g} away from the current model (L2 norm of the difference), "
            f"more than the limit of {max_norm:g}"
        )
    scale = max_norm / norm
    clipped: NDArrays = []
    for p, c in zip(checked, current):
        base = np.asarray(c, dtype=np.float64)
        clipped.append((base + (np.asarray(p, dtype=np.float64) - base) * scale).astype(p.dtype))
    return clipped, None
