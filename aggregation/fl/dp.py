"""Central differential privacy around any strategy: clip every update delta, add Gaussian noise to the result."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.aggregate import as_float64
from aggregation.fl.checks import check_int, check_number, construct
from aggregation.fl.manifest import ModelSpec
from aggregation.fl.strategy import AggregationError, FitRes, Strategy, check_results

INNER = "inner."


def clip_results(results: list[FitRes], current: NDArrays, clip_norm: float) -> tuple[list[FitRes], np.ndarray]:
    """Each result moved to within `clip_norm` of `current` (float64), and the original delta norms."""
    check_results(results, current)
    base = as_float64(current)
    clipped: list[FitRes] = []
    norms = np.empty(len(results))
    for index, result in enumerate(results):
        deltas = [np.asarray(p, dtype=np.float64) - c for p, c in zip(result.parameters, base)]
        norms[index] = math.sqrt(sum(float(np.vdot(d, d)) for d in deltas))
        # C / max(norm, C) is min(1, C / norm) without dividing by a zero norm.
        scale = clip_norm / max(norms[index], clip_norm)
        clipped.append(FitRes([c + d * scale for c, d in zip(base, deltas)], result.num_examples, result.metrics))
    return clipped, norms


def add_noise(params: NDArrays, stddev: float, rng: np.random.Generator) -> NDArrays:
    """params + N(0, stddev²) independently in every coordinate, as float32."""
    if stddev == 0:
        return [np.asarray(p, dtype=np.float32) for p in params]
    with np.errstate(over="ignore"):
        noised = [(np.asarray(p, dtype=np.float64) + rng.normal(0.0, stddev, np.shape(p))).astype(np.float32)
                  for p in params]
    if not all(np.isfinite(p).all() for p in noised):
        raise AggregationError(f"noise of stddev {stddev:g} made the model overflow; lower noise_multiplier")
    return noised


class DPFixedClipping(Strategy):
    """Central DP with a fixed clip norm (DP-FedAvg).

    McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language Models",
    ICLR 2018 (arXiv:1710.06963).

    Every node's delta from the current model is clipped to L2 norm clip_norm C, the inner strategy
    aggregates the clipped updates, and Gaussian noise with stddev z·C/m (z = noise_multiplier,
    m = number of results) is added to every coordinate of the aggregate. The sensitivity argument
    holds when the inner aggregate is an equally weighted mean of the clipped updates.

    Noise comes from np.random.default_rng([seed, round, 0]), so a resumed run draws the same noise;
    anyone who knows the seed can subtract it, so keep the seed secret. seed None draws fresh OS
    entropy every round (private, not reproducible).
    """

    name = "dpfixed"

    def __init__(self, inner: Strategy, *, noise_multiplier: float, clip_norm: float, seed: int | None = None) -> None:
        if not isinstance(inner, Strategy):
            raise ValueError(f"differential privacy wraps a strategy, got {inner!r}")
        self.inner = inner
        self.noise_multiplier = check_number("noise_multiplier", noise_multiplier, 0)
        self.clip_norm = check_number("clip_norm", clip_norm, 0, low_open=True)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.inner!r}, noise_multiplier={self.noise_multiplier}, "
            f"clip_norm={self.clip_norm}, seed={'<set>' if self.seed is not None else None})"
        )

    def initialize_parameters(self, spec: ModelSpec, seed: int) -> NDArrays | None:
        return self.inner.initialize_parameters(spec, seed)

    def configure_fit(self, server_round: int) -> dict[str, Any]:
        return self.inner.configure_fit(server_round)

    def rng(self, server_round: int, stream: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, server_round, stream])

    def state_dict(self) -> dict[str, np.ndarray]:
        return {INNER + key: value for key, value in self.inner.state_dict().items()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        own = sorted(key for key in state if not key.startswith(INNER))
        if own:
            raise ValueError(f"strategy {self.name!r} cannot use the saved state entries {', '.join(own)}")
        self.inner.load_state({key[len(INNER) :]: value for key, value in state.items()})

    def aggregate_fit(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        clipped, _ = clip_results(results, parameters, self.clip_norm)
        new, metrics = self.inner.aggregate_fit(server_round, parameters, clipped, failures)
        if new is None or not results:
            return new, metrics
        stddev = self.noise_multiplier * self.clip_norm / len(results)
        metrics = {
            **metrics,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_clip_norm": self.clip_norm,
            "dp_noise_stddev": stddev,
        }
        return add_noise(new, stddev, self.rng(server_round, 0)), metrics


class DPAdaptiveClipping(DPFixedClipping):
    """Central DP with a clip norm that tracks a quantile of the update norms.

    Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning with Adaptive
    Clipping", NeurIPS 2021 (arXiv:1905.03871).

    Each round clips with the current C (starting at clip_norm), then updates it geometrically:
    C ← C·exp(−clip_learning_rate·(b̄ − target_quantile)), where b̄ is the fraction of updates with
    norm ≤ C plus Gaussian noise of stddev clipped_count_stddev/m (default m/20 before dividing, as in
    the paper). When more updates than the target quantile fit under C, C shrinks; when fewer, it
    grows. noise_multiplier z is the total (what a privacy accountant uses): the updates get
    z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2), reported as dp_update_noise_multiplier, so the count's noise is
    paid for; that needs σ_b > z/2. C is the strategy's state.
    """

    name = "dpadaptive"

    def __init__(
        self,
        inner: Strategy,
        *,
        noise_multiplier: float,
        clip_norm: float = 0.1,
        target_quantile: float = 0.5,
        clip_learning_rate: float = 0.2,
        clipped_count_stddev: float | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(inner, noise_multiplier=noise_multiplier, clip_norm=clip_norm, seed=seed)
        self.target_quantile = check_number("target_quantile", target_quantile, 0, 1)
        self.clip_learning_rate = check_number("clip_learning_rate", clip_learning_rate, 0, low_open=True)
        self.clipped_count_stddev = (
            None if clipped_count_stddev is None else check_number("clipped_count_stddev", clipped_count_stddev, 0)
        )
        if self.clipped_count_stddev is not None:
            self.update_noise_multiplier(self.clipped_count_stddev)

    def update_noise_multiplier(self, count_stddev: float) -> float:
        """z_Δ, the share of the total noise multiplier left for the updates (Andrew et al., Theorem 1)."""
        z = self.noise_multiplier
        if z == 0:
            return 0.0
        if 2 * count_stddev <= z:
            raise AggregationError(
                f"with noise_multiplier {z:g} the clipped-count noise stddev must be more than {z / 2:g}, "
                f"got {count_stddev:g}; raise clipped_count_stddev (its default is the number of results / 20)"
            )
        return (z**-2 - (2 * count_stddev) ** -2) ** -0.5

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**super().state_dict(), "clip_norm": np.array(self.clip_norm, dtype=np.float64)}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        if "clip_norm" in state:
            self.clip_norm = check_number("the saved clip_norm", float(state["clip_norm"]), 0, low_open=True)
        super().load_state({key: value for key, value in state.items() if key != "clip_norm"})

    def aggregate_fit(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        m = len(results)
        if m == 0:
            return self.inner.aggregate_fit(server_round, parameters, results, failures)
        count_stddev = self.clipped_count_stddev if self.clipped_count_stddev is not None else m / 20
        z_updates = self.update_noise_multiplier(count_stddev)
        clip = self.clip_norm
        clipped, norms = clip_results(results, parameters, clip)
        new, metrics = self.inner.aggregate_fit(server_round, parameters, clipped, failures)
        if new is None:
            return None, metrics
        stddev = z_updates * clip / m
        noised = add_noise(new, stddev, self.rng(server_round, 0))
        unclipped = (np.count_nonzero(norms <= clip) + self.rng(server_round, 1).normal(0.0, count_stddev)) / m
        # Geometric step: C shrinks when more than the target quantile of updates already fit under it.
        with np.errstate(over="ignore"):  # a huge count noise may overflow; C stays a positive finite number
            updated = clip * float(np.exp(-self.clip_learning_rate * (unclipped - self.target_quantile)))
        self.clip_norm = min(max(updated, np.finfo(np.float64).tiny), np.finfo(np.float64).max)
        metrics = {
            **metrics,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_update_noise_multiplier": z_updates,
            "dp_clip_norm": clip,
            "dp_noise_stddev": stddev,
            "dp_unclipped_fraction": float(unclipped),
            "dp_next_clip_norm": self.clip_norm,
        }
        return noised, metrics


DP_MODES: dict[str, type[DPFixedClipping]] = {"fixed": DPFixedClipping, "adaptive": DPAdaptiveClipping}


def dp_wrap(inner: Strategy, options: Mapping[str, Any]) -> Strategy:
    """Wrap `inner` as the registry's "dp" option describes: {"mode": "fixed" | "adaptive", ...}."""
    if not isinstance(options, Mapping):
        raise ValueError(f'dp must be an object such as {{"mode": "fixed", "noise_multiplier": 1.0}}, got {options!r}')
    options = dict(options)
    mode = options.pop("mode", None)
    cls = DP_MODES.get(mode) if isinstance(mode, str) else None
    if cls is None:
        raise ValueError(f"dp mode must be one of {', '.join(map(repr, DP_MODES))}, got {mode!r}")
    return construct(f"dp mode {mode!r}", cls, options, inner, skip=("inner",), extra=("mode",))
