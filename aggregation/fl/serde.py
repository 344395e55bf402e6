"""A hand-written safetensors codec: named tensors to bytes and back, with no pickle, ever.

Byte-compatible with the reference `safetensors` library; every malformed input is a SerdeError.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.manifest import ModelSpec

MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"

# safetensors dtype name and numpy type code; the format is always little-endian.
_CODES = "F64:<f8 F32:<f4 F16:<f2 I64:<i8 I32:<i4 I16:<i2 I8:i1 U64:<u8 U32:<u4 U16:<u2 U8:u1 BOOL:?"
_DTYPES = {
    name: np.dtype(code) for name, code in (x.split(":") for x in _CODES.split())
}
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in _DTYPES.items()}
# bfloat16 has no numpy dtype: read as 16-bit words, widened to float32 on decode (never written).
_DTYPES["BF16"] = np.dtype("<u2")
FLOAT_NAMES = ("F32", "F16", "BF16", "F64")


class SerdeError(ValueError):
    """Bytes or tensors that cannot be encoded or decoded; the message is a sentence for people."""


def sha256_hex(buf: bytes) -> str:
    return hashlib.sha256(buf).hexdigest()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _layout(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None) -> tuple[bytes, list[memoryview]]:
    """The encoded header (length prefix included) and the tensors' data as contiguous uint8 views."""
    header: dict[str, Any] = {}
    if metadata is not None:
        _check_metadata(metadata)
        header[METADATA_KEY] = dict(metadata)
    chunks: list[memoryview] = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise SerdeError(f"tensor names must be strings, got {name!r}")
        if name == METADATA_KEY:
            raise SerdeError(f"{METADATA_KEY!r} is reserved and cannot name a tensor")
        arr = np.asarray(value)
        dtype_name = _NAMES.get((arr.dtype.kind, arr.dtype.itemsize))
        if dtype_name is None:
            msg = f"tensor {name!r} has dtype {arr.dtype}, which cannot be stored"
            raise SerdeError(msg)
        # The format is little-endian and C-ordered whatever the array's own layout.
        data = np.ascontiguousarray(arr, dtype=_DTYPES[dtype_name])
        header[name] = {
            "dtype": dtype_name,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        chunks.append(data.reshape(-1).view(np.uint8).data)
        offset += data.nbytes
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded, chunks


def dumps(
    tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> bytes:
    """Encode tensors in the given order; the header is padded with spaces to a multiple of 8 bytes."""
    header, chunks = _layout(tensors, metadata)
    return b"".join([header, *chunks])


def dumps_sha256(
    tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> str:
    """sha256_hex(dumps(tensors, metadata)), hashed piece by piece without building the encoding."""
    header, chunks = _layout(tensors, metadata)
    digest = hashlib.sha256(header)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SerdeError(f"the safetensors header names {key!r} twice")
        result[key] = value
    return result


def _check_metadata(metadata: object) -> None:
    if not isinstance(metadata, dict):
        raise SerdeError(f"safetensors metadata must be an object, got {metadata!r}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            msg = f"metadata must map strings to strings, but {key!r} maps to {value!r}"
            raise SerdeError(msg)


def _read_header(view: memoryview) -> dict[str, Any]:
    if len(view) < 8:
        msg = f"the data is only {len(view)} bytes long, too short to be safetensors (at least 8 are needed)"
        raise SerdeError(msg)
    size = int.from_bytes(view[:8], "little")
    if size > MAX_HEADER_BYTES:
        msg = f"the safetensors header claims to be {size} bytes long, more than the limit of {MAX_HEADER_BYTES}"
        raise SerdeError(msg)
    if 8 + size > len(view):
        msg = f"the safetensors header claims to be {size} bytes long but only {len(view) - 8} bytes follow the length"
        raise SerdeError(msg)
    try:
        text = bytes(view[8 : 8 + size]).decode("utf-8")
        header = json.loads(text, object_pairs_hook=_reject_duplicates)
    except UnicodeDecodeError:
        raise SerdeError("the safetensors header is not valid UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SerdeError(f"the safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        msg = (
            f"the safetensors header must be a JSON object, got {type(header).__name__}"
        )
        raise SerdeError(msg)
    return header


def _parse_entry(
    name: str, entry: object
) -> tuple[np.dtype, tuple[int, ...], int, int]:
    if not isinstance(entry, dict):
        raise SerdeError(f"the header entry for tensor {name!r} is not an object")
    missing = [key for key in ("dtype", "shape", "data_offsets") if key not in entry]
    if missing:
        raise SerdeError(f"the header entry for {name!r} lacks {', '.join(missing)}")
    dtype = _DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        msg = f"tensor {name!r} has dtype {entry['dtype']!r}, which is not supported; use one of {', '.join(_DTYPES)}"
        raise SerdeError(msg)
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        msg = f"tensor {name!r} has shape {shape!r}, which is not a list of non-negative integers"
        raise SerdeError(msg)
    offsets = entry["data_offsets"]
    pair = isinstance(offsets, list) and len(offsets) == 2
    if not pair or not all(_is_int(o) and o >= 0 for o in offsets):
        msg = f"tensor {name!r} has data_offsets {offsets!r}, which is not a pair of non-negative integers"
        raise SerdeError(msg)
    begin, end = offsets
    if end < begin:
        msg = f"tensor {name!r} ends at byte {end}, before it begins at {begin}"
        raise SerdeError(msg)
    return dtype, tuple(shape), begin, end


def loads(
    buf: bytes | bytearray | memoryview,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode safetensors bytes into (tensors in header order, metadata); arrays may be read-only views."""
    view = memoryview(buf).cast("B")
    header = _read_header(view)
    # The reference library writes no metadata key at all, but null is valid there too.
    metadata = header.pop(METADATA_KEY, None) or {}
    _check_metadata(metadata)
    data_start = 8 + int.from_bytes(view[:8], "little")
    data_len = len(view) - data_start
    entries = {name: _parse_entry(name, entry) for name, entry in header.items()}
    previous_end, previous_name = 0, None
    for name, (dtype, shape, begin, end) in sorted(
        entries.items(), key=lambda item: (item[1][2], item[1][3])
    ):
        if end > data_len:
            msg = (
                f"the safetensors header says tensor {name!r} ends at byte {end} "
                f"but the data is only {data_len} bytes"
            )
            raise SerdeError(msg)
        if begin < previous_end:
            msg = f"tensors {previous_name!r} and {name!r} overlap in the data"
            raise SerdeError(msg)
        if begin > previous_end:
            msg = f"the safetensors data has unused bytes {previous_end} to {begin} before tensor {name!r}"
            raise SerdeError(msg)
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            msg = (
                f"tensor {name!r} has shape {list(shape)} and needs {expected} bytes, "
                f"but its offsets span {end - begin}"
            )
            raise SerdeError(msg)
        previous_end, previous_name = end, name
    if previous_end != data_len:
        msg = f"the safetensors data is {data_len} bytes but the tensors only account for {previous_end}"
        raise SerdeError(msg)
    data = view[data_start:]
    tensors = {
        name: np.frombuffer(data, dtype, math.prod(shape), begin).reshape(shape)
        for name, (dtype, shape, begin, _end) in entries.items()
    }
    for name in tensors:
        if header[name]["dtype"] == "BF16":
            tensors[name] = (tensors[name].astype(np.uint32) << 16).view(np.float32)
    return tensors, metadata


def dtype_names(buf: bytes | bytearray | memoryview) -> dict[str, str]:
    """Each tensor's safetensors dtype name, from the header alone."""
    header = _read_header(memoryview(buf).cast("B"))
    header.pop(METADATA_KEY, None)
    return {name: str(entry.get("dtype")) if isinstance(entry, dict) else "?" for name, entry in header.items()}


def all_float32(buf: bytes | bytearray | memoryview) -> bool:
    """Whether every tensor of a (well-formed) safetensors buffer is stored as F32; reads the header only."""
    header = _read_header(memoryview(buf).cast("B"))
    header.pop(METADATA_KEY, None)
    return all(isinstance(entry, dict) and entry.get("dtype") == "F32" for entry in header.values())


def _check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if arr.shape != shape:
        msg = f"tensor {name!r} has shape {list(arr.shape)} but the model expects {list(shape)}"
        raise SerdeError(msg)
    return arr


def params_dumps(
    spec: ModelSpec, params: NDArrays, metadata: dict[str, str] | None = None
) -> bytes:
    """Encode model parameters as float32 tensors named after spec.names()."""
    return dumps(_params_tensors(spec, params), metadata)


def params_sha256(spec: ModelSpec, params: NDArrays) -> str:
    """The digest of params_dumps(spec, params), without building it: what identifies an update's parameters."""
    return dumps_sha256(_params_tensors(spec, params))


def _params_tensors(spec: ModelSpec, params: NDArrays) -> dict[str, np.ndarray]:
    names, shapes = spec.names(), spec.shapes()
    if len(params) != len(names):
        msg = f"the model has {len(names)} tensors ({', '.join(names)}) but {len(params)} were given"
        raise SerdeError(msg)
    tensors: dict[str, np.ndarray] = {}
    for name, shape, p in zip(names, shapes, params):
        tensors[name] = _check_shape(name, np.asarray(p, dtype=np.float32), shape)
    return tensors


def params_loads(
    spec: ModelSpec, buf: bytes | bytearray | memoryview
) -> tuple[NDArrays, dict[str, str]]:
    """Decode model parameters in spec order as float32; does not check finiteness (see check_finite)."""
    tensors, metadata = loads(buf)
    return params_from_tensors(spec, tensors), metadata


def name_problems(expected: list[str], names: Iterable[str]) -> list[str]:
    """How tensor `names` differ from the `expected` ones: "missing 'a'", "unexpected 'b'" (empty: they match)."""
    names = list(names)
    missing = [n for n in expected if n not in names]
    unexpected = [n for n in names if n not in expected]
    return [f"{label} {', '.join(map(repr, found))}"
            for label, found in (("missing", missing), ("unexpected", unexpected)) if found]


def params_from_tensors(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> NDArrays:
    """Decoded tensors (from `loads`) as the model's parameters in spec order, float32."""
    names = spec.names()
    problems = name_problems(names, tensors)
    if problems:
        msg = f"the parameters do not match the model's tensors: {'; '.join(problems)}"
        raise SerdeError(msg)
    params: NDArrays = []
    for name, shape in zip(names, spec.shapes()):
        arr = _check_shape(name, tensors[name], shape)
        if arr.dtype.kind != "f":
            # An integer read as a number would be silently wrong (a float32 relabelled I32 reads as ~1e9).
            raise SerdeError(f"tensor {name!r} is stored as {arr.dtype}; parameters must be floating point "
                             f"({', '.join(FLOAT_NAMES)})")
        with np.errstate(
            over="ignore"
        ):  # F64 beyond float32's range becomes inf: check_finite's job
            params.append(arr.astype(np.float32, copy=False))
    return params


def check_finite(params: NDArrays, names: list[str]) -> None:
    """Raise SerdeError naming the first tensor that holds a NaN or an infinity."""
    if len(params) != len(names):
        raise ValueError(f"got {len(params)} tensors but {len(names)} names")
    for name, p in zip(names, params):
        if not np.isfinite(p).all():
            raise SerdeError(f"tensor {name!r} contains NaN or infinity")

