"""Hyperparameter checks shared by the strategies: each failure is a ValueError naming the parameter."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, TypeVar

T = TypeVar("T")


def check_int(name: str, value: object, *, minimum: int) -> int:
    """An int (not a bool) of at least `minimum`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    if minimum == 1:
        wanted = "a positive integer"
    elif minimum == 0:
        wanted = "a non-negative integer"
    else:
        wanted = f"an integer of at least {minimum}"
    raise ValueError(f"{name} must be {wanted}, got {value!r}")


def _describe(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low == 0:
        return "a positive number" if low_open else "a non-negative number"
    if low is not None:
        return f"a number {'greater than' if low_open else 'of at least'} {low:g}"
    if high is not None:
        return f"a number {'less than' if high_open else 'of at most'} {high:g}"
    return "a finite number"


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (not a bool) within the given bounds, returned as a Python float."""
    try:
        number = float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int too large for a float
        number = math.nan
    ok = math.isfinite(number)
    if ok:
        if low is not None and (number < low or (low_open and number == low)):
            ok = False
        if high is not None and (number > high or (high_open and number == high)):
            ok = False
    if not ok:
        raise ValueError(f"{name} must be {_describe(low, high, low_open, high_open)}, got {value!r}")
    return number


def keyword_params(cls: type) -> list[str]:
    """The names a class's constructor accepts by keyword, in signature order."""
    return [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]


def construct(
    what: str,
    cls: type[T],
    params: Mapping[str, Any],
    *args: Any,
    skip: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> T:
    """cls(*args, **params), turning unknown or missing keywords into a ValueError that names `what`.

    `skip` hides constructor arguments the caller fills itself; `extra` lists keys the caller took out
    of `params` before the call, so the error message still names them as accepted.
    """
    accepted = [name for name in keyword_params(cls) if name not in skip] + list(extra)
    unknown = [key for key in params if key not in accepted]
    if unknown:
        choices = ", ".join(accepted) if accepted else "none"
        raise ValueError(f"{what} does not accept parameter(s) {', '.join(map(repr, unknown))}; it accepts: {choices}")
    required = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.default is p.empty and p.name not in params
    ]
    if required:
        raise ValueError(f"{what} needs parameter(s) {', '.join(map(repr, required))}")
    try:
        return cls(*args, **params)
    except TypeError as exc:
        raise ValueError(f"{what} cannot be built with {dict(params)!r}: {exc}") from None
