"""Turning request bodies (JSON or safetensors) into ParsedUpdate, with sentences for every mistake."""
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.compression import update_decode, update_encoding_of
from aggregation.fl.manifest import ModelSpec
from aggregation.fl.model import unflatten
from aggregation.fl.serde import SerdeError, all_float32
from aggregation.services.updates import ParsedUpdate
from fedsite.errors import ApplicationError
from fedsite.jsonparse import json_loads

MAX_METRICS = 64


def metrics_parse(raw: Any) -> dict[str, float]:
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json_loads(raw)
        except ValueError:
            raise ApplicationError("bad_metrics", "metrics must be a JSON object of names to numbers.") from None
    if not isinstance(raw, dict) or len(raw) > MAX_METRICS:
        raise ApplicationError("bad_metrics", f"metrics must be an object of at most {MAX_METRICS} names to numbers.")
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        if len(key) > 64 or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApplicationError("bad_metrics", f"metric {key[:64]!r} must be a number under a name of at most "
                                   "64 characters.")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            number = math.inf
        if not math.isfinite(number):
            raise ApplicationError("bad_metrics", f"metric {key!r} must be a finite number.")
        metrics[key] = number
    return metrics


def num_examples_parse(raw: Any) -> int:
    # isdigit() alone lets through "²" and 5,000-digit strings, which int() refuses or chokes on.
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit() and len(raw.strip()) <= 10:
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 2**31 - 1:
        raise ApplicationError("bad_num_examples", "num_examples must be a whole number of at least 1.")
    return raw


def _array(name: str, values: Any) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise ApplicationError("wrong_shape", f"{name} is not a regular array of numbers.") from None
    if array.dtype.kind not in "iuf" or array.dtype == object:
        raise ApplicationError("bad_parameters", f"{name} must contain only numbers.")
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def parameters_from_json(spec: ModelSpec, raw: Any) -> list[np.ndarray]:
    """A flat list in the prototype's order, or an object of named tensors."""
    if isinstance(raw, list):
        flat = _array("parameters", raw)
        if flat.ndim != 1:
            raise ApplicationError("wrong_shape", "parameters must be a flat list of numbers.")
        if flat.size != spec.num_params():
            raise ApplicationError(
                "wrong_length", f"The model has {spec.num_params()} parameters, the update has {flat.size}."
            )
        return unflatten(spec, flat)
    if isinstance(raw, dict):
        missing = [n for n in spec.names() if n not in raw]
        extra = [n for n in raw if n not in spec.names()]
        if missing or extra:
            raise ApplicationError(
                "wrong_shape",
                f"Tensors must be exactly {', '.join(spec.names())}; missing: {', '.join(missing) or 'none'}, "
                f"unexpected: {', '.join(extra) or 'none'}.",
            )
        return [_array(f"tensor '{n}'", raw[n]) for n in spec.names()]
    raise ApplicationError("bad_parameters", "parameters must be a flat list of numbers or an object of tensors.")


def update_from_json(spec: ModelSpec, body: Any) -> ParsedUpdate:
    if not isinstance(body, dict) or "parameters" not in body:
        raise ApplicationError("bad_update", "The body must be an object with 'parameters', 'num_examples' and "
                               "optionally 'metrics'.")
    return ParsedUpdate(
        parameters=parameters_from_json(spec, body["parameters"]),
        num_examples=num_examples_parse(body.get("num_examples")),
        metrics=metrics_parse(body.get("metrics")),
    )


def _no_base() -> NDArrays:
    raise SerdeError("it is delta-encoded, but the round's base model is not known here")


def update_from_safetensors(spec: ModelSpec, body: bytes, base: Callable[[], NDArrays] | None = None) -> ParsedUpdate:
    """Float32 parameters, or an fp16/int8 delta (fl.compression) decoded against `base()`, the round's model."""
    try:
        params, metadata = update_decode(spec, body, base or _no_base)
    except SerdeError as exc:
        raise ApplicationError("bad_safetensors", f"The safetensors body is rejected: {exc}") from None
    return ParsedUpdate(
        parameters=params,
        num_examples=num_examples_parse(metadata.get("num_examples")),
        metrics=metrics_parse(metadata.get("metrics")),
        # Plain float32 parameters are stored as they came, with no re-encoding.
        raw=bytes(body) if update_encoding_of(metadata) == "none" and all_float32(body) else None,
    )


def json_body(body: bytes) -> Any:
    try:
        return json_loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApplicationError("bad_json", f"The request body is not valid JSON ({exc}).") from None
