"""The strategy interface, modelled on Flower's: a strategy turns node updates into the next global model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from aggregation.fl import NDArrays
from aggregation.fl.manifest import ModelSpec
from aggregation.fl.model import MLPSpec, init_parameters


class AggregationError(ValueError):
    """Updates that cannot be combined (no weight, mismatched shapes); the message is for people."""


@dataclass
class FitRes:
    """One node's training result for a round."""

    parameters: NDArrays
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class Strategy:
    """Base class for aggregation strategies; hyperparameters are keyword-only constructor arguments."""

    name: ClassVar[str]
    # True when aggregate_fit uses the results' parameters only through their example-weighted mean;
    # such a strategy implements aggregate_mean and can be fed a mean accumulated in streaming.
    streams_mean: ClassVar[bool] = False

    def initialize_parameters(self, spec: ModelSpec, seed: int) -> NDArrays | None:
        """The round-0 model; every node starts from it, so it must come from the seed alone.

        None when the strategy cannot make one: a user's model brings its own version 0.
        """
        return init_parameters(spec, seed) if isinstance(spec, MLPSpec) else None

    def configure_fit(self, server_round: int) -> dict[str, Any]:
        """Extra training configuration sent to nodes for this round (for example a proximal term)."""
        return {}

    def state_dict(self) -> dict[str, np.ndarray]:
        """What the strategy carries from one round to the next (scalars as 0-d arrays); {} if nothing.

        A fresh strategy with the same hyperparameters that loads this continues bit-identically.
        """
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from a `state_dict()` of the same strategy; raises ValueError on a state it cannot use."""
        if state:
            raise ValueError(
                f"strategy {self.name!r} keeps no state, but the saved state holds {', '.join(sorted(state))}"
            )

    # Fewer results than this keep the current model (strategies set it from their constructor).
    min_results: int = 1

    def aggregate_fit(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        """Combine results into the next global model.

        `parameters` is the current global model. Returning None as the parameters means "keep the
        current model": so it is with no results or fewer than `min_results`. Otherwise every result
        must hold the current model's tensors, and `combine` applies the rule. Failures are reported
        here, never raised.
        """
        if not results or len(results) < self.min_results:
            return None, {}
        check_results(results, parameters)
        return self.combine(server_round, parameters, results, failures)

    def combine(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        """The strategy's rule, given at least `min_results` results shaped like `parameters`."""
        raise NotImplementedError(f"strategy {self.name!r} defines no combine rule")

    def aggregate_mean(
        self,
        server_round: int,
        parameters: NDArrays,
        mean: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        """aggregate_fit given the results' example-weighted mean; only strategies with `streams_mean`."""
        raise NotImplementedError(f"strategy {self.name!r} needs every update, not only their mean")


def layers_state(prefix: str, layers: NDArrays | None) -> dict[str, np.ndarray]:
    """Per-layer arrays as state entries `<prefix>.0`, `<prefix>.1`, ... (float64 copies)."""
    if layers is None:
        return {}
    return {f"{prefix}.{i}": np.array(layer, dtype=np.float64, copy=True) for i, layer in enumerate(layers)}


def layers_from_state(state: Mapping[str, np.ndarray], prefix: str) -> NDArrays | None:
    """The arrays stored by `layers_state` (copied, so read-only buffers are fine), or None if absent."""
    count = sum(1 for key in state if key.startswith(prefix + "."))
    if count == 0:
        return None
    try:
        return [np.array(state[f"{prefix}.{i}"], dtype=np.float64, copy=True) for i in range(count)]
    except KeyError as exc:
        raise ValueError(f"the saved state has {count} {prefix!r} entries but lacks {exc.args[0]!r}") from None


def check_state_keys(name: str, state: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> None:
    """Refuse keys that do not belong to this strategy, so a mixed-up state is noticed, not ignored."""
    unexpected = sorted(key for key in state if key.split(".", 1)[0] not in prefixes)
    if unexpected:
        raise ValueError(f"strategy {name!r} cannot use the saved state entries {', '.join(unexpected)}")


def check_state_like(what: str, layers: NDArrays, reference: NDArrays) -> None:
    """A saved per-layer state must match the model it is applied to."""
    shapes = [np.shape(layer) for layer in layers]
    expected = [np.shape(layer) for layer in reference]
    if shapes != expected:
        raise AggregationError(f"the saved {what} has shapes {shapes} but the model has {expected}")


def check_results(results: list[FitRes], current: NDArrays) -> None:
    """Every result must hold the current model's tensors, in count and shape."""
    expected = [np.shape(layer) for layer in current]
    for index, result in enumerate(results):
        shapes = [np.shape(layer) for layer in result.parameters]
        if len(shapes) != len(expected):
            raise AggregationError(f"result {index} has {len(shapes)} tensors but the model has {len(expected)}")
        for position, (shape, want) in enumerate(zip(shapes, expected)):
            if shape != want:
                raise AggregationError(
                    f"tensor {position} of result {index} has shape {shape} but the model's has shape {want}"
                )
