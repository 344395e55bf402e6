"""The shared model: a multilayer perceptron with ReLU hidden layers; ½·MSE for regression, softmax
cross-entropy for classification. The parameter order (w1, b1, w2, b2, ...) is also the order on the wire.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.checks import check_number
from aggregation.fl.spec import MAX_PARAMS, MLPSpec, is_int

if TYPE_CHECKING:
    from aggregation.fl.manifest import ModelSpec

__all__ = [
    "MAX_PARAMS", "MLPSpec", "flatten", "forward", "gradients", "init_parameters", "loss", "predict", "softmax",
    "targets", "train", "unflatten",
]


def init_parameters(spec: MLPSpec, seed: int) -> NDArrays:
    """Glorot/Xavier uniform weights and zero biases, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    params: NDArrays = []
    for fan_in, fan_out in zip(spec.layers[:-1], spec.layers[1:]):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        params.append(
            rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)
        )
        params.append(np.zeros(fan_out, dtype=np.float32))
    return params


def _check_params(spec: MLPSpec, params: NDArrays) -> None:
    shapes = spec.shapes()
    if len(params) != len(shapes):
        msg = f"the model expects {len(shapes)} parameter tensors, got {len(params)}"
        raise ValueError(msg)
    for name, shape, p in zip(spec.names(), shapes, params):
        if np.shape(p) != shape:
            msg = (
                f"tensor {name!r} has shape {np.shape(p)} but the model expects {shape}"
            )
            raise ValueError(msg)


def _check_x(spec: MLPSpec, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != spec.layers[0]:
        raise ValueError(f"inputs must have shape (n, {spec.layers[0]}), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("at least one sample is needed")
    return x


def targets(spec: MLPSpec, y: np.ndarray, n: int) -> np.ndarray:
    """The (n, outputs) target matrix: y itself for regression, one-hot rows of class labels for classification.

    Raises ValueError with a sentence if y does not fit the model (shape, or labels outside 0..classes-1).
    """
    y = np.asarray(y)
    out = spec.layers[-1]
    if spec.task == "classification":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape != (n,):
            raise ValueError(f"a classifier needs one class label per sample, shape ({n},), got {y.shape}")
        if y.dtype.kind not in "iuf":
            raise ValueError(f"class labels must be numbers, got values of type {y.dtype}")
        if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise ValueError("class labels must be whole numbers")
        labels = y.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= out):
            msg = (f"class labels must lie in 0..{out - 1} for a model with {out} outputs, "
                   f"got labels from {labels.min()} to {labels.max()}")
            raise ValueError(msg)
        onehot = np.zeros((n, out), dtype=np.float32)
        onehot[np.arange(n), labels] = 1.0
        return onehot
    if y.ndim == 1 and out == 1:
        # Single-output targets usually arrive as a flat list of labels.
        y = y.reshape(-1, 1)
    if y.shape != (n, out):
        msg = f"targets must have shape ({n}, {out}), got {y.shape}"
        raise ValueError(msg)
    return y


def _activations(params: NDArrays, x: np.ndarray) -> list[np.ndarray]:
    """Input, every hidden activation and the output; backprop needs all of them."""
    acts = [x]
    layers = len(params) // 2
    for i in range(layers):
        z = acts[-1] @ params[2 * i] + params[2 * i + 1]
        acts.append(np.maximum(z, 0) if i < layers - 1 else z)
    return acts


def forward(spec: MLPSpec, params: NDArrays, x: np.ndarray) -> np.ndarray:
    """Raw outputs of shape (n, outputs): predictions for regression, logits for classification."""
    _check_params(spec, params)
    x = _check_x(spec, x)
    return _activations(params, x)[-1]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits cannot overflow."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(spec: MLPSpec, params: NDArrays, x: np.ndarray) -> np.ndarray:
    """Class indices of shape (n,) for a classifier; the (n, outputs) predictions for regression."""
    out = forward(spec, params, x)
    return out.argmax(axis=1) if spec.task == "classification" else out


def _loss_of(spec: MLPSpec, out: np.ndarray, t: np.ndarray) -> float:
    if spec.task == "classification":
        # log softmax by log-sum-exp: stable for any logits, and exact where the softmax underflows.
        z = out - out.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-np.mean(np.sum(t * log_p, axis=1)))
    err = out - t
    return float(0.5 * np.mean(np.sum(err * err, axis=1)))


def loss(spec: MLPSpec, params: NDArrays, x: np.ndarray, y: np.ndarray) -> float:
    """Regression: 0.5 times the mean over samples of the squared error summed over outputs.
    Classification: the mean cross-entropy of the softmax of the outputs against the class labels."""
    _check_params(spec, params)
    x = _check_x(spec, x)
    return _loss_of(spec, _activations(params, x)[-1], targets(spec, y, x.shape[0]))


def gradients(
    spec: MLPSpec, params: NDArrays, x: np.ndarray, y: np.ndarray
) -> NDArrays:
    """Analytic gradient of `loss`, in the order and shapes of `params`."""
    _check_params(spec, params)
    x = _check_x(spec, x)
    return _gradients_of(spec, params, x, targets(spec, y, x.shape[0]))


def _gradients_of(spec: MLPSpec, params: NDArrays, x: np.ndarray, t: np.ndarray) -> NDArrays:
    acts = _activations(params, x)
    out = acts[-1]
    # Both losses have the same output delta form: (prediction − target) / n, with the softmax as the
    # prediction for cross-entropy.
    pred = softmax(out) if spec.task == "classification" else out
    delta = (pred - t) / x.shape[0]
    grads: NDArrays = [np.empty(0)] * len(params)
    for i in reversed(range(len(params) // 2)):
        grads[2 * i] = (acts[i].T @ delta).astype(params[2 * i].dtype, copy=False)
        grads[2 * i + 1] = delta.sum(axis=0).astype(params[2 * i + 1].dtype, copy=False)
        if i > 0:
            # A ReLU passes gradient only where its output was positive.
            delta = (delta @ params[2 * i].T) * (acts[i] > 0)
    return grads


def train(
    spec: MLPSpec,
    params: NDArrays,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 10,
    learning_rate: float = 0.01,
    batch_size: int = 0,
    seed: int = 0,
    proximal_mu: float = 0.0,
    global_params: NDArrays | None = None,
) -> tuple[NDArrays, float]:
    """Gradient descent from `params`; returns new float32 params and the loss on (x, y) afterwards.

    batch_size 0 (or at least the number of samples) is full-batch descent, as in the prototype.
    proximal_mu > 0 adds FedProx's (mu/2)·||w − w_global||² to the objective (Li et al. 2020), with
    w_global = `global_params`, or `params` when not given; the returned loss is the data loss only.
    """
    if not is_int(epochs) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not is_int(batch_size) or batch_size < 0:
        msg = f"batch_size must be a non-negative integer, got {batch_size!r}"
        raise ValueError(msg)
    if not math.isfinite(learning_rate) or learning_rate <= 0:
        msg = f"learning_rate must be a positive number, got {learning_rate!r}"
        raise ValueError(msg)
    proximal_mu = check_number("proximal_mu", proximal_mu, 0)
    _check_params(spec, params)
    anchor = _proximal_anchor(spec, params if global_params is None else global_params, proximal_mu)
    x = _check_x(spec, np.asarray(x, dtype=np.float32))
    # Targets are checked and (for a classifier) one-hot encoded once, not at every mini-batch.
    y = targets(spec, y, x.shape[0]).astype(np.float32, copy=False)
    # Copies, so the caller's arrays (often the global model) are never changed.
    new = [np.array(p, dtype=np.float32, copy=True) for p in params]
    lr = np.float32(learning_rate)
    mu = np.float32(proximal_mu)
    n = x.shape[0]
    full_batch = batch_size == 0 or batch_size >= n
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        if full_batch:
            batches = [(x, y)]
        else:
            order = rng.permutation(n)
            batches = [
                (x[idx], y[idx])
                for idx in np.array_split(order, range(batch_size, n, batch_size))
            ]
        for xb, yb in batches:
            grads = _gradients_of(spec, new, xb, yb)
            if anchor:
                # The proximal term's gradient, mu·(w − w_global), pulls each step back towards the global model.
                for p, g, a in zip(new, grads, anchor):
                    g += mu * (p - a)
            for p, g in zip(new, grads):
                np.multiply(g, lr, out=g)
                np.subtract(p, g, out=p)
    return new, _loss_of(spec, _activations(new, x)[-1], y)


def _proximal_anchor(spec: MLPSpec, global_params: NDArrays, proximal_mu: float) -> NDArrays:
    """float32 copies of the global model for the proximal term, or [] when the term is off."""
    if proximal_mu == 0:
        return []
    _check_params(spec, global_params)
    anchor = [np.array(p, dtype=np.float32, copy=True) for p in global_params]
    if not all(np.isfinite(a).all() for a in anchor):
        raise ValueError("global_params contains NaN or infinity")
    return anchor


def flatten(params: NDArrays) -> np.ndarray:
    """One float32 vector: w1 row-major, then b1, w2, b2, ... (the prototype's order)."""
    if not params:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in params])


def unflatten(spec: ModelSpec, vec: np.ndarray) -> NDArrays:
    """Inverse of `flatten`; raises ValueError if the vector has the wrong length."""
    arr = np.asarray(vec)
    # Refuse strings, None and booleans instead of letting numpy coerce them to numbers or NaN.
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"parameters must be numbers, got values of type {arr.dtype}")
    with np.errstate(
        over="ignore"
    ):  # out-of-range values become inf, which check_finite reports
        arr = arr.astype(np.float32, copy=False)
    if arr.ndim != 1:
        msg = f"expected a flat vector of parameters, got an array of shape {arr.shape}"
        raise ValueError(msg)
    expected = spec.num_params()
    if arr.size != expected:
        raise ValueError(f"expected {expected} parameters, got {arr.size}")
    params: NDArrays = []
    offset = 0
    for shape in spec.shapes():
        size = math.prod(shape)
        params.append(arr[offset : offset + size].reshape(shape).copy())
        offset += size
    return params
