"""Compressed uploads: a node sends its update minus the round's model (the delta) as fp16 or int8 safetensors.

Compressing the delta rather than the parameters is what keeps int8 accurate: a round moves the model by a
little, so 255 levels spread over max|delta| lose far less than 255 levels spread over max|parameter|.

Wire format (safetensors, tensors named after the model spec, `__metadata__` as for float32 uploads):

- "none": float32 parameters, no marker: exactly the plain upload (params_dumps).
- "fp16": metadata "encoding": "fp16-delta"; tensor <name> is F16, update − base.
- "int8": metadata "encoding": "int8-delta"; tensor <name> is I8 in -127..127 and tensor <name>.scale is an
  F32 scalar (shape [] or [1]) with scale = max|delta| / 127, so delta ≈ <name> × scale. A tensor whose delta
  is all zeros has scale 0.

The scale travels as an F32 tensor, not as metadata text, so its exact bits reach the server. Decoding adds the
delta to the round's base model in float32; the server then stores the float32 result like any upload.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.manifest import ModelSpec
from aggregation.fl.serde import SerdeError, dumps, loads, name_problems, params_dumps, params_from_tensors

ENCODINGS = ("none", "fp16", "int8")
ENCODING_KEY = "encoding"
MARKERS = {"fp16": "fp16-delta", "int8": "int8-delta"}
SCALE_SUFFIX = ".scale"
INT8_LEVELS = 127
FP16_MAX = float(np.finfo(np.float16).max)

Base = NDArrays | Callable[[], NDArrays]


def _check_same_model(spec: ModelSpec, arrays: NDArrays, what: str, *, finite: bool = True) -> list[np.ndarray]:
    names, shapes = spec.names(), spec.shapes()
    if len(arrays) != len(names):
        raise SerdeError(f"the model has {len(names)} tensors ({', '.join(names)}) but the {what} has {len(arrays)}")
    checked = []
    for name, shape, array in zip(names, shapes, arrays):
        array = np.asarray(array, dtype=np.float32)
        if array.shape != shape:
            raise SerdeError(f"tensor {name!r} of the {what} has shape {list(array.shape)}, "
                             f"but the model expects {list(shape)}")
        if finite and not np.isfinite(array).all():
            raise SerdeError(f"tensor {name!r} of the {what} contains NaN or infinity")
        checked.append(array)
    return checked


def int8_quantize(delta: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """Symmetric per-tensor quantisation: (values in -127..127, scale = max|delta| / 127)."""
    scale = np.float32(np.max(np.abs(delta), initial=0.0) / INT8_LEVELS)
    if scale == 0:
        return np.zeros(delta.shape, dtype=np.int8), scale
    levels = np.rint(delta / scale)
    return np.clip(levels, -INT8_LEVELS, INT8_LEVELS).astype(np.int8), scale


def _fp16(name: str, delta: np.ndarray) -> np.ndarray:
    if delta.size and np.max(np.abs(delta)) > FP16_MAX:
        raise SerdeError(f"tensor {name!r} moved by more than {FP16_MAX:g}, beyond fp16's range; "
                         "use the int8 encoding or none")
    return delta.astype(np.float16)


def update_encode(spec: ModelSpec, params: NDArrays, base: NDArrays, encoding: str,
                  metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes of an update in `encoding` (none, fp16 or int8); fp16 and int8 carry params − base."""
    if encoding not in ENCODINGS:
        raise SerdeError(f"the update encoding {encoding!r} is unknown; use one of {', '.join(ENCODINGS)}")
    if encoding == "none":
        return params_dumps(spec, params, metadata)
    params = _check_same_model(spec, params, "update")
    base = _check_same_model(spec, base, "base model")
    tensors: dict[str, np.ndarray] = {}
    for name, new, old in zip(spec.names(), params, base):
        delta = new - old
        if encoding == "fp16":
            tensors[name] = _fp16(name, delta)
        else:
            tensors[name], scale = int8_quantize(delta)
            tensors[name + SCALE_SUFFIX] = np.asarray(scale)
    return dumps(tensors, {**(metadata or {}), ENCODING_KEY: MARKERS[encoding]})


def update_encoding_of(metadata: dict[str, str]) -> str:
    """The encoding a body's metadata declares: none when it has no marker."""
    marker = metadata.get(ENCODING_KEY)
    if marker in (None, "none"):
        return "none"
    for encoding, known in MARKERS.items():
        if marker == known:
            return encoding
    raise SerdeError(f"the update declares encoding {marker!r}, which this server cannot read; "
                     f"send float32 parameters or one of {', '.join(MARKERS.values())}")


def _check_names(expected: list[str], tensors: dict[str, np.ndarray], marker: str) -> None:
    problems = name_problems(expected, tensors)
    if problems:
        raise SerdeError(f"a {marker} update must hold exactly the tensors {', '.join(expected)}; "
                         f"{'; '.join(problems)}")


def _delta_tensor(name: str, array: np.ndarray, shape: tuple[int, ...], dtype: type, marker: str) -> np.ndarray:
    if array.dtype != np.dtype(dtype):
        raise SerdeError(f"tensor {name!r} holds {array.dtype} values, but a {marker} update stores "
                         f"{np.dtype(dtype).name}")
    if array.shape != shape:
        raise SerdeError(f"tensor {name!r} has shape {list(array.shape)} but the model expects {list(shape)}")
    return array


def _scale(name: str, array: np.ndarray) -> np.float32:
    if array.dtype != np.float32 or array.ndim > 1 or array.size != 1:
        raise SerdeError(f"tensor {name!r} must be one float32 number (shape [] or [1]), "
                         f"got {array.dtype} of shape {list(array.shape)}")
    scale = np.float32(array.reshape(-1)[0])
    if not np.isfinite(scale) or scale < 0:
        raise SerdeError(f"tensor {name!r} is {float(scale)}, but a scale must be a finite number of at least 0")
    return scale


def _deltas(spec: ModelSpec, tensors: dict[str, np.ndarray], encoding: str) -> NDArrays:
    marker, names, shapes = MARKERS[encoding], spec.names(), spec.shapes()
    if encoding == "fp16":
        _check_names(names, tensors, marker)
        return [_delta_tensor(n, tensors[n], s, np.float16, marker).astype(np.float32) for n, s in zip(names, shapes)]
    _check_names([x for n in names for x in (n, n + SCALE_SUFFIX)], tensors, marker)
    deltas = []
    for name, shape in zip(names, shapes):
        levels = _delta_tensor(name, tensors[name], shape, np.int8, marker)
        if levels.size and levels.min() < -INT8_LEVELS:
            raise SerdeError(f"tensor {name!r} holds -128, but int8-delta values lie in -127..127")
        scale = _scale(name + SCALE_SUFFIX, tensors[name + SCALE_SUFFIX])
        with np.errstate(over="ignore"):  # a huge scale gives infinity, refused below with the tensor's name
            deltas.append(levels.astype(np.float32) * scale)
    return deltas


def update_decode(spec: ModelSpec, body: bytes | bytearray | memoryview, base: Base) -> tuple[NDArrays, dict[str, str]]:
    """Float32 parameters and metadata of an upload in any encoding.

    `base` is the round's model, or a function returning it: it is only read when the body is delta-encoded.
    """
    tensors, metadata = loads(body)
    encoding = update_encoding_of(metadata)
    if encoding == "none":
        return params_from_tensors(spec, tensors), metadata
    deltas = _deltas(spec, tensors, encoding)
    # The base is a stored model, and every decoded tensor is checked for finiteness below: no
    # extra pass over it per upload.
    base = _check_same_model(spec, base() if callable(base) else base, "base model", finite=False)
    params = []
    for name, old, delta in zip(spec.names(), base, deltas):
        with np.errstate(over="ignore"):
            new = old + delta
        if not np.isfinite(new).all():
            raise SerdeError(f"tensor {name!r} decodes to NaN or infinity")
        params.append(new)
    return params, metadata
