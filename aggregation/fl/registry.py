"""Strategies by name, so an experiment can store its strategy as plain JSON."""

from __future__ import annotations

import inspect
from typing import Any

from aggregation.fl.fedavg import FedAvg
from aggregation.fl.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg}


def strategy_create(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Build a strategy from its name and keyword hyperparameters, raising ValueError with a sentence."""
    cls = STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    try:
        params = dict(params or {})
    except (TypeError, ValueError):
        raise ValueError(
            f"the parameters of strategy {name!r} must be an object, got {params!r}"
        ) from None
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]
    unknown = [key for key in params if key not in accepted]
    if unknown:
        choices = ", ".join(accepted) if accepted else "none"
        raise ValueError(
            f"strategy {name!r} does not accept parameter(s) {', '.join(map(repr, unknown))}; it accepts: {choices}"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(
            f"strategy {name!r} cannot be built with {params!r}: {exc}"
        ) from None
