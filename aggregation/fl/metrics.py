"""Evaluation of a model on labelled data (loss, accuracy) and the metric test behind early stopping."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.model import MLPSpec, loss, predict

STOP_OPS = (">=", "<=")


def accuracy(spec: MLPSpec, params: NDArrays, x: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose most likely class is the label; only for classifiers."""
    if spec.task != "classification":
        raise ValueError("accuracy is defined for classification models only")
    labels = np.asarray(y).reshape(-1)
    return float(np.mean(predict(spec, params, x) == labels))


def evaluate(spec: MLPSpec, params: NDArrays, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """{"loss": ...} plus "accuracy" for a classifier; the loss is the model's training loss."""
    result = {"loss": loss(spec, params, x, y)}
    if spec.task == "classification":
        result["accuracy"] = accuracy(spec, params, x, y)
    return result


def stop_condition_holds(values: Sequence[float | None], op: str, threshold: float, patience: int) -> bool:
    """True if the last `patience` values (newest last) all exist and satisfy `value op threshold`.

    A round without the metric breaks the streak, so a condition never holds on data it did not see.
    """
    if op not in STOP_OPS:
        raise ValueError(f"the stop comparison must be one of {', '.join(STOP_OPS)}, got {op!r}")
    if patience < 1 or len(values) < patience:
        return False
    for value in values[-patience:]:
        if value is None or isinstance(value, bool) or not math.isfinite(value):
            return False
        if not (value >= threshold if op == ">=" else value <= threshold):
            return False
    return True


def stop_condition_parse(text: str) -> tuple[str, str, float]:
    """Parse `metric>=threshold` or `metric<=threshold` (e.g. `val_accuracy>=0.95`) into its three parts."""
    for op in STOP_OPS:
        metric, found, raw = str(text).partition(op)
        if found:
            metric = metric.strip()
            try:
                threshold = float(raw)
            except ValueError:
                threshold = math.nan
            if not metric or not math.isfinite(threshold):
                break
            return metric, op, threshold
    raise ValueError(f"a stop condition looks like val_accuracy>=0.95 or loss<=0.1, got {text!r}")
