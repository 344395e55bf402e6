"""Pure-numpy aggregation helpers shared by strategies, after Flower's aggregate.py."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.strategy import AggregationError, FitRes


def _check_weight(index: int, weight: object) -> float:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, Real)
        or not math.isfinite(weight)
    ):
        raise AggregationError(
            f"result {index} has num_examples {weight!r}, which is not a finite number"
        )
    if weight < 0:
        raise AggregationError(
            f"result {index} has a negative number of examples ({weight})"
        )
    return float(weight)


def weighted_average(results: list[tuple[NDArrays, int]]) -> NDArrays:
    """Average each layer weighted by num_examples: sum_k n_k * w_k / sum_k n_k, returned as float32."""
    if not results:
        raise AggregationError("there are no results to average")
    weights = [_check_weight(i, n) for i, (_, n) in enumerate(results)]
    total = sum(weights)
    if total <= 0:
        raise AggregationError(
            "the results hold no examples in total, so they cannot be weighted"
        )
    reference = [np.shape(layer) for layer in results[0][0]]
    for index, (layers, _) in enumerate(results):
        shapes = [np.shape(layer) for layer in layers]
        if len(shapes) != len(reference):
            raise AggregationError(
                f"result {index} has {len(shapes)} tensors but result 0 has {len(reference)}"
            )
        for position, (shape, expected) in enumerate(zip(shapes, reference)):
            if shape != expected:
                raise AggregationError(
                    f"tensor {position} of result {index} has shape {shape} but in result 0 it has {expected}"
                )
    shares = [w / total for w in weights]
    return [_weighted_sum([layers[i] for layers, _ in results], shares) for i in range(len(reference))]


# Elements per block: the float32 accumulator block and one scratch block stay in the L2 cache
# while every update's block streams through once, so the sum runs at memory bandwidth instead of
# re-reading a model-sized accumulator once per update. 64 Ki elements (2 x 256 KB, well inside a
# 2 MB L2) beat 16 Ki here by up to 1.4x on K=100 updates: fewer numpy calls per byte.
_BLOCK = 65536


def _weighted_sum(layers: list[np.ndarray], shares: list[float]) -> np.ndarray:
    """sum_k shares[k] * layers[k] in float32, blockwise; shares are normalised, so sums stay O(1)."""
    flat = [np.ravel(np.asarray(layer, dtype=np.float32)) for layer in layers]
    size = flat[0].size
    out = np.zeros(size, dtype=np.float32)
    scratch = np.empty(min(size, _BLOCK), dtype=np.float32)
    for start in range(0, size, _BLOCK):
        stop = min(size, start + _BLOCK)
        acc, tmp = out[start:stop], scratch[: stop - start]
        for layer, share in zip(flat, shares):
            np.multiply(layer[start:stop], np.float32(share), out=tmp)
            np.add(acc, tmp, out=acc)
    return out.reshape(np.shape(layers[0]))


class MeanAccumulator:
    """The example-weighted mean of updates that arrive one at a time: memory of one model, whatever their number.

    `expected_weight` is the total weight announced in advance (the sum of num_examples); each update is
    added scaled by weight / expected_weight, so the float32 sums stay O(1) as in `weighted_average`.
    If fewer updates end up added (some rejected), `mean()` rescales by the weight actually added.
    """

    def __init__(self, reference: NDArrays, expected_weight: float) -> None:
        if not math.isfinite(expected_weight) or expected_weight <= 0:
            raise AggregationError("the results hold no examples in total, so they cannot be weighted")
        self.shapes = [np.shape(layer) for layer in reference]
        self.sums = [np.zeros(np.size(layer), dtype=np.float32) for layer in reference]
        self.expected = float(expected_weight)
        self.added = 0.0
        self.count = 0

    def add(self, layers: NDArrays, weight: float) -> None:
        """Add one update (shapes as the reference) with its weight."""
        weight = _check_weight(self.count, weight)
        if len(layers) != len(self.shapes):
            raise AggregationError(
                f"result {self.count} has {len(layers)} tensors but the model has {len(self.shapes)}"
            )
        for position, (layer, shape) in enumerate(zip(layers, self.shapes)):
            if np.shape(layer) != shape:
                raise AggregationError(
                    f"tensor {position} of result {self.count} has shape {np.shape(layer)} but the model's has "
                    f"shape {shape}"
                )
        share = np.float32(weight / self.expected)
        for acc, layer in zip(self.sums, layers):
            flat = np.ravel(np.asarray(layer, dtype=np.float32))
            for start in range(0, flat.size, _BLOCK):  # blockwise: the product never takes a model-sized temporary
                block = acc[start : start + _BLOCK]
                block += flat[start : start + _BLOCK] * share
        self.added += weight
        self.count += 1

    def mean(self) -> NDArrays:
        if self.count == 0 or self.added <= 0:
            raise AggregationError("the results hold no examples in total, so they cannot be weighted")
        if self.added != self.expected:  # rescale the sums once, so calling mean() again gives the same
            for acc in self.sums:
                acc *= np.float32(self.expected / self.added)
            self.expected = self.added
        return [acc.reshape(shape).copy() for acc, shape in zip(self.sums, self.shapes)]


def weighted_metrics(results: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Example-weighted mean of every numeric metric, over the results that report it.

    Non-numeric and non-finite values are ignored; a metric whose reporters hold no examples is left out.
    """
    sums: dict[str, float] = {}
    totals: dict[str, float] = {}
    for num_examples, metrics in results:
        for key, value in metrics.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, Real)
                or not math.isfinite(value)
            ):
                continue
            sums[key] = sums.get(key, 0.0) + num_examples * float(value)
            totals[key] = totals.get(key, 0.0) + num_examples
    return {key: sums[key] / totals[key] for key in sums if totals[key] > 0}


def fit_metrics(results: list[FitRes]) -> dict[str, float]:
    """The round's metrics: example-weighted node metrics plus the totals every strategy reports."""
    metrics = weighted_metrics([(r.num_examples, r.metrics) for r in results])
    metrics["num_examples"] = sum(r.num_examples for r in results)
    metrics["num_results"] = len(results)
    return metrics


def layer_stack(results: list[FitRes], position: int) -> np.ndarray:
    """Tensor `position` of every result stacked along a new first axis, as float64 (K, *shape)."""
    return np.stack([np.asarray(r.parameters[position], dtype=np.float64) for r in results])


def flat_stack(results: list[FitRes]) -> np.ndarray:
    """All results flattened into one (K, P) float64 array, rows in result order."""
    size = sum(np.size(layer) for layer in results[0].parameters)
    out = np.empty((len(results), size), dtype=np.float64)
    for row, result in zip(out, results):
        offset = 0
        for layer in result.parameters:
            row[offset : offset + np.size(layer)] = np.ravel(layer)
            offset += np.size(layer)
    return out


def unflatten_like(vec: np.ndarray, reference: NDArrays) -> NDArrays:
    """Split a flat vector back into float32 tensors shaped like `reference`."""
    out: NDArrays = []
    offset = 0
    for layer in reference:
        size = np.size(layer)
        out.append(np.asarray(vec[offset : offset + size], dtype=np.float32).reshape(np.shape(layer)))
        offset += size
    return out


def as_float64(params: NDArrays) -> NDArrays:
    """float64 copies, the precision server-side optimisers accumulate in."""
    return [np.array(layer, dtype=np.float64, copy=True) for layer in params]


def as_float32(params: NDArrays) -> NDArrays:
    return [np.asarray(layer, dtype=np.float32) for layer in params]
