"""A user's client as the node loop needs it: arrays matched to the experiment's tensors, results checked.

The loop speaks the experiment's manifest order; the client speaks its own (the order its
get_parameters returns). The two are matched once per manifest, by name when the client declares
names, else by shape, and every result is checked before it can reach a round.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from typing import Any

import numpy as np

from aggregation.fl.manifest import Manifest, ModelSpec, default_names, manifest_of

logger = logging.getLogger("fedsite.node")
NDArrays = list[np.ndarray]
MAX_METRIC_NAME = 64  # aggregation.parsing.metrics_parse's limit


class ClientMismatch(Exception):
    """The client's model does not fit the experiment's (count, names or shapes): retrying cannot fix it."""


class ClientFailed(ValueError):
    """One call of the client failed (it raised, or returned NaN or nonsense): this round is skipped."""


def unwrap(client: Any) -> Any:
    """A Flower `to_client()` wrapper carries the NumPyClient it wraps; anything else is used as it is."""
    return getattr(client, "numpy_client", client)


def implements(client: Any, method: str) -> bool:
    """Whether `client` has its own `method`, not only the NumPyClient base class's placeholder."""
    for cls in type(client).__mro__:
        if method in vars(cls):
            return cls.__name__ != "NumPyClient"
    return callable(getattr(client, method, None))


def _arrays(value: Any, what: str) -> NDArrays:
    if not isinstance(value, (list, tuple)):
        raise ClientFailed(f"{what} must be a list of numpy arrays, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        try:
            arr = np.asarray(item)
        except Exception as exc:  # a tensor on a GPU, a ragged list...
            raise ClientFailed(f"{what}: item {i} is not an array ({exc})") from None
        if arr.dtype.kind not in "fiu":
            raise ClientFailed(f"{what}: item {i} holds {arr.dtype} values, not numbers")
        out.append(arr)
    return out


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ClientFailed(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ClientFailed(f"{what} must be a whole number of at least 1, got {value!r}")
    return int(value)


def _metrics(value: Any, what: str) -> dict[str, float]:
    """The numeric metrics (Flower allows str/bytes/bool too: those stay on the node)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClientFailed(f"{what} must be a dict of metric names to numbers, got {type(value).__name__}")
    # A 0-d tensor or numpy scalar (loss.detach(), np.float32) is a number too.
    value = {k: v.item() if hasattr(v, "item") and np.size(v) == 1 else v for k, v in value.items()}
    # The server refuses a whole upload over one metric named longer than 64 characters: leave those out.
    kept = {str(k): float(v) for k, v in value.items() if len(str(k)) <= MAX_METRIC_NAME
            and isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))}
    dropped = sorted(str(k) for k in value if str(k) not in kept)
    if dropped and tuple(dropped) not in _reported_drops:
        _reported_drops.add(tuple(dropped))
        logger.warning("%s: metric(s) %s left out: the server takes finite numbers under names of at most %d "
                       "characters", what, ", ".join(map(repr, dropped)), MAX_METRIC_NAME)
    return dict(list(kept.items())[:64])


_reported_drops: set[tuple[str, ...]] = set()


class ClientAdapter:
    """Calls a NumPyClient-shaped object in its own tensor order and checks what it returns."""

    def __init__(self, client: Any) -> None:
        self.client = unwrap(client)
        missing = [m for m in ("get_parameters", "fit") if not callable(getattr(self.client, m, None))]
        if missing:
            raise ClientMismatch(f"{type(self.client).__name__} is not a client: it has no {' or '.join(missing)} "
                                 "method (see fedsite_node.NumPyClient)")
        self.can_evaluate = implements(self.client, "evaluate")
        self.manifest: Manifest | None = None
        self.order: list[int] = []  # order[i]: the manifest index of the client's i-th array
        self.names: list[str] = []  # the tensors' names in the client's order

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.client, method)(*args)
        except Exception as exc:
            logger.warning("the client's %s raised; its traceback:", method, exc_info=True)
            raise ClientFailed(f"the client's {method} raised {type(exc).__name__}: {exc}") from exc

    def client_names(self) -> list[str] | None:
        if not callable(getattr(self.client, "get_parameter_names", None)):
            return None
        names = self._call("get_parameter_names", {})
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ClientMismatch("get_parameter_names must return a list of strings")
        return list(names)

    def offers_parameters(self) -> bool:
        """Whether the client has a get_parameters of its own (Flower's base class answers [])."""
        return implements(self.client, "get_parameters")

    def initial(self) -> tuple[list[str], NDArrays]:
        """(names, float32 arrays) of the client's current model: version 0 for an --init-from-node experiment."""
        arrays = _arrays(self._call("get_parameters", {}), "get_parameters")
        if not arrays:
            raise ClientMismatch("the client's get_parameters returned no tensors, so it cannot provide the initial "
                                 "model; create the experiment with --init FILE instead")
        names = self.client_names() or default_names(len(arrays))
        if len(names) != len(arrays):
            raise ClientMismatch(f"get_parameter_names gave {len(names)} names for {len(arrays)} tensors")
        try:  # the server's rules, said here: an integer buffer or a repeated name would be refused every time
            Manifest.from_shapes(names, arrays)
        except ValueError as exc:
            raise ClientMismatch(f"the client's parameters cannot be the initial model: {exc}") from None
        return names, [np.asarray(a, dtype=np.float32) for a in arrays]

    def bind(self, spec: ModelSpec) -> None:
        """Match the client's arrays to the experiment's tensors, or raise ClientMismatch naming the first misfit."""
        manifest = manifest_of(spec)
        if manifest == self.manifest:
            return
        identity = list(range(len(manifest.tensors)))
        arrays = _arrays(self._call("get_parameters", {}), "get_parameters")
        names = self.client_names() if arrays else None
        if not arrays:  # Flower's default get_parameters: the client takes the tensors in the manifest's order
            order = identity
        elif names is not None:
            order = self._by_name(manifest, names, arrays)
        elif not manifest.first_mismatch(arrays) and (_unique_shapes(manifest)
                                                       or manifest.names() == default_names(len(arrays))):
            # Position by position fits, and no two tensors could trade places (or the manifest came from
            # this kind of client: --init-from-node names them param_0, param_1, ... in the client's order).
            order = identity
        else:
            order = self._by_shape(manifest, arrays)
        # Only a complete match is kept: a failed bind must not leave a half-made order behind.
        self.manifest, self.order = manifest, order
        self.names = [manifest.tensors[i].name for i in order]
        if order != identity:
            logger.info("client tensors matched to the experiment's by %s: %s", "name" if names else "shape",
                        ", ".join(self.names))

    def _by_name(self, manifest: Manifest, names: list[str], arrays: NDArrays) -> list[int]:
        if len(set(names)) != len(names) or len(names) != len(arrays):
            raise ClientMismatch(f"get_parameter_names gave {len(names)} names ({len(set(names))} different) for "
                                 f"{len(arrays)} tensors; each tensor needs its own name")
        index = {n: i for i, n in enumerate(manifest.names())}
        for name, arr in zip(names, arrays):
            if name not in index:
                hint = ("; integer buffers (such as BatchNorm's num_batches_tracked) are not federated: leave them out "
                        "of get_parameters and get_parameter_names" if np.asarray(arr).dtype.kind in "iub" else "")
                raise ClientMismatch(f"the client has tensor {name!r}, which the experiment's model does not "
                                     f"have{hint}")
        missing = [n for n in manifest.names() if n not in names]
        if missing:
            raise ClientMismatch(f"the client has no tensor {missing[0]!r}, which the experiment's model has")
        order = [index[n] for n in names]
        problem = manifest_in_order(manifest, order).first_mismatch(arrays)
        if problem:
            raise ClientMismatch(problem)
        return order

    def _by_shape(self, manifest: Manifest, arrays: NDArrays) -> list[int]:
        problem = manifest.first_mismatch(arrays)
        if len(arrays) != len(manifest.tensors):
            raise ClientMismatch(problem)
        shapes = manifest.shapes()
        order = []
        for i, arr in enumerate(arrays):
            matches = [j for j, s in enumerate(shapes) if s == tuple(np.shape(arr))]
            if not matches:
                raise ClientMismatch(f"the client's tensor {i} has shape {list(np.shape(arr))}, which no tensor of "
                                     f"the experiment's model has ({problem})")
            if len(matches) > 1:
                raise ClientMismatch(
                    f"tensors {', '.join(repr(manifest.tensors[j].name) for j in matches)} share shape "
                    f"{list(shapes[matches[0]])}, so the client's arrays cannot be matched to the experiment's "
                    f"tensors ({', '.join(manifest.names())}) by shape: give the client a "
                    "get_parameter_names(config) method returning their names")
            order.append(matches[0])
        unmatched = [t for j, t in enumerate(manifest.tensors) if j not in order]
        if unmatched:  # two of the client's arrays took the same tensor's shape, so another has no array
            raise ClientMismatch(f"no array of the client has the shape {list(unmatched[0].shape)} of tensor "
                                 f"{unmatched[0].name!r} ({problem})")
        return order

    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "tensor_names": json.dumps(self.names)}

    def _to_client(self, params: NDArrays) -> NDArrays:
        return [np.array(params[j], dtype=np.float32) for j in self.order]

    def _from_client(self, arrays: NDArrays, what: str) -> NDArrays:
        assert self.manifest is not None
        problem = manifest_in_order(self.manifest, self.order).first_mismatch(arrays)
        if problem:
            raise ClientMismatch(f"{what} does not fit the experiment's model: {problem}")
        out: NDArrays = [np.empty(0)] * len(arrays)
        for i, j in enumerate(self.order):
            with np.errstate(over="ignore"):
                out[j] = np.asarray(arrays[i], dtype=np.float32)
            if not np.isfinite(out[j]).all():
                raise ClientFailed(f"{what}: tensor {self.manifest.tensors[j].name!r} contains NaN or infinity")
        return out

    def fit(self, params: NDArrays, config: dict[str, Any]) -> tuple[NDArrays, int, dict[str, float]]:
        result = self._call("fit", self._to_client(params), self.config(config))
        if not isinstance(result, tuple) or len(result) != 3:
            raise ClientMismatch("fit must return (parameters, num_examples, metrics)")
        arrays = _arrays(result[0], "the parameters fit returned")
        return (self._from_client(arrays, "the parameters fit returned"),
                _count(result[1], "fit's num_examples"), _metrics(result[2], "fit's metrics"))

    def evaluate(self, params: NDArrays, config: dict[str, Any]) -> tuple[float, int, dict[str, float]]:
        result = self._call("evaluate", self._to_client(params), self.config(config))
        if not isinstance(result, tuple) or len(result) != 3:
            raise ClientMismatch("evaluate must return (loss, num_examples, metrics)")
        return (_number(result[0], "evaluate's loss"), _count(result[1], "evaluate's num_examples"),
                _metrics(result[2], "evaluate's metrics"))


def _unique_shapes(manifest: Manifest) -> bool:
    shapes = manifest.shapes()
    return len(set(shapes)) == len(shapes)


def manifest_in_order(manifest: Manifest, order: list[int]) -> Manifest:
    return Manifest(tuple(manifest.tensors[j] for j in order))
