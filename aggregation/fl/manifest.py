"""A model as the federation sees it: an ordered list of named tensors (name, shape, dtype).

Strategies, validation, compression and storage only need names and shapes, so any model a user
brings (PyTorch, Keras, scikit-learn, numpy) is a manifest plus its version-0 weights. The built-in
MLP is one producer of a manifest (`MLPSpec`); `spec_from_dict` reads either form from an experiment.

Every tensor is stored, aggregated and sent as float32. A float16, bfloat16 or float64 tensor in an
initial file is converted to float32; the manifest keeps the file's dtype as `init_dtype` so a
client can cast back. Integer and boolean tensors are refused: averaging a step counter or a mask
has no meaning, so such buffers stay on the node.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from aggregation.fl.spec import MAX_PARAMS, MLPSpec, is_int

MAX_TENSORS = 10_000
MAX_NAME_CHARS = 200
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
RESERVED = "__metadata__"


def name_problem(name: object) -> str:
    """Why `name` cannot name a tensor (empty: it can)."""
    if not isinstance(name, str) or not name:
        return f"tensor names must be non-empty strings, got {name!r}"
    if len(name) > MAX_NAME_CHARS:
        return f"tensor name {name[:40]!r}... is longer than {MAX_NAME_CHARS} characters"
    if name == RESERVED:
        return f"{RESERVED!r} is reserved and cannot name a tensor"
    if name != name.strip() or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return f"tensor name {name!r} has leading/trailing space or control characters"
    return ""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    init_dtype: str = "F32"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": "F32"}
        if self.init_dtype != "F32":
            d["init_dtype"] = self.init_dtype
        return d


@dataclass(frozen=True)
class Manifest:
    """Named float32 tensors in wire order; validated on construction."""

    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        if not self.tensors:
            raise ValueError("a model needs at least one tensor")
        if len(self.tensors) > MAX_TENSORS:
            raise ValueError(f"a model may have at most {MAX_TENSORS} tensors, this one has {len(self.tensors)}")
        seen: set[str] = set()
        for t in self.tensors:
            problem = name_problem(t.name)
            if problem:
                raise ValueError(problem)
            if t.name in seen:
                raise ValueError(f"tensor name {t.name!r} appears twice")
            seen.add(t.name)
            if not all(is_int(d) and d >= 0 for d in t.shape):
                raise ValueError(f"tensor {t.name!r} has shape {list(t.shape)}, not a list of non-negative integers")
            if t.init_dtype not in FLOAT_DTYPES:
                raise ValueError(f"tensor {t.name!r} has dtype {t.init_dtype}; only floating-point tensors "
                                 f"({', '.join(FLOAT_DTYPES)}) can be federated")
        total = self.num_params()
        if total > MAX_PARAMS:
            raise ValueError(f"this model has {total} parameters, more than the limit of {MAX_PARAMS}")

    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def shapes(self) -> list[tuple[int, ...]]:
        return [t.shape for t in self.tensors]

    def num_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "tensors", "tensors": [t.to_dict() for t in self.tensors]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        tensors = d.get("tensors")
        if not isinstance(tensors, list):
            raise ValueError(f"a tensor manifest needs 'tensors', a list of {{name, shape}} objects, got {tensors!r}")
        specs = []
        for i, entry in enumerate(tensors):
            if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
                raise ValueError(f"manifest entry {i} must be an object with a name and a shape list, got {entry!r}")
            # Unchecked here: Manifest's own validation says what is wrong with a name, a shape or a dtype.
            name: Any = entry.get("name")
            dtype: Any = entry.get("init_dtype", entry.get("dtype", "F32"))
            specs.append(TensorSpec(name, tuple(entry["shape"]), dtype))
        return cls(tuple(specs))

    @classmethod
    def from_shapes(cls, names: list[str], arrays: list[np.ndarray]) -> Manifest:
        """The manifest of in-memory arrays (a client's get_parameters); they must be floating point."""
        for name, arr in zip(names, arrays):
            if np.asarray(arr).dtype.kind != "f":
                raise ValueError(f"tensor {name!r} has dtype {np.asarray(arr).dtype}; only floating-point "
                                 "tensors can be federated")
        return cls(tuple(TensorSpec(n, tuple(int(d) for d in np.shape(a))) for n, a in zip(names, arrays)))

    def first_mismatch(self, arrays: list[Any]) -> str:
        """One sentence naming the first tensor of `arrays` (in manifest order) that does not fit; empty if all fit."""
        if len(arrays) != len(self.tensors):
            return (f"the experiment's model has {len(self.tensors)} tensors but {len(arrays)} were given"
                    + (f"; the first one without a match is {self.tensors[len(arrays)].name!r}"
                       if len(arrays) < len(self.tensors) else ""))
        for t, arr in zip(self.tensors, arrays):
            shape = tuple(np.shape(arr))
            if shape != t.shape:
                return f"tensor {t.name!r} should have shape {list(t.shape)} but has {list(shape)}"
            if np.asarray(arr).dtype.kind not in "fiu":
                return f"tensor {t.name!r} holds {np.asarray(arr).dtype} values, not numbers"
        return ""


ModelSpec = MLPSpec | Manifest
# An experiment waiting for its first node's parameters (--init-from-node) has this model: none yet.
PENDING: dict[str, Any] = {"kind": "tensors", "tensors": []}


def spec_pending(d: object) -> bool:
    return d == PENDING


def default_names(count: int) -> list[str]:
    """Names for a client that gives only a list of arrays (Flower's get_parameters): param_0, param_1, ..."""
    return [f"param_{i}" for i in range(count)]


def spec_from_dict(d: Mapping[str, Any]) -> ModelSpec:
    """The experiment's model from its JSON: the built-in MLP (`kind: mlp`) or a tensor manifest (`kind: tensors`)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"a model spec must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind", "mlp")
    if kind == "tensors":
        return Manifest.from_dict(d)
    if kind != "mlp":
        # MLPSpec alone would say 'mlp' is the only kind, hiding the tensor manifest.
        raise ValueError(f"unknown model kind {kind!r}; use 'mlp' (the built-in model) or 'tensors' (named tensors)")
    return MLPSpec.from_dict(d)


def manifest_of(spec: ModelSpec) -> Manifest:
    """Any model spec as its manifest."""
    if isinstance(spec, Manifest):
        return spec
    return Manifest(tuple(TensorSpec(n, s) for n, s in zip(spec.names(), spec.shapes())))
