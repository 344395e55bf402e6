"""Strategies by name, so an experiment can store its strategy as plain JSON."""

from __future__ import annotations

from typing import Any

from aggregation.fl.bulyan import Bulyan
from aggregation.fl.checks import construct
from aggregation.fl.dp import dp_wrap
from aggregation.fl.fedadagrad import FedAdagrad
from aggregation.fl.fedadam import FedAdam
from aggregation.fl.fedavg import FedAvg
from aggregation.fl.fedavgm import FedAvgM
from aggregation.fl.fedmedian import FedMedian
from aggregation.fl.fedprox import FedProx
from aggregation.fl.fedtrimmedavg import FedTrimmedAvg
from aggregation.fl.fedyogi import FedYogi
from aggregation.fl.krum import Krum
from aggregation.fl.multikrum import MultiKrum
from aggregation.fl.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg, FedAvgM, FedProx, FedAdagrad, FedAdam, FedYogi, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan
    )
}


def strategy_create(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Build a strategy from its name and keyword hyperparameters, raising ValueError with a sentence.

    The key "dp" (an object with "mode": "fixed" or "adaptive" and the mode's options) wraps the
    strategy in central differential privacy; see aggregation.fl.dp.
    """
    cls = STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    try:
        params = dict(params or {})
    except (TypeError, ValueError):
        raise ValueError(f"the parameters of strategy {name!r} must be an object, got {params!r}") from None
    dp = params.pop("dp", None)
    strategy = construct(f"strategy {name!r}", cls, params, extra=("dp",))
    return strategy if dp is None else dp_wrap(strategy, dp)
