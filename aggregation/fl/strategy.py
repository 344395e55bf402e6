"""The strategy interface, modelled on Flower's: a strategy turns node updates into the next global model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aggregation.fl import NDArrays
from aggregation.fl.model import MLPSpec, init_parameters


class AggregationError(ValueError):
    """Updates that cannot be combined (no weight, mismatched shapes); the message is for people."""


@dataclass
class FitRes:
    """One node's training result for a round."""

    parameters: NDArrays
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class Strategy(ABC):
    """Base class for aggregation strategies; hyperparameters are keyword-only constructor arguments."""

    name: ClassVar[str]

    def initialize_parameters(self, spec: MLPSpec, seed: int) -> NDArrays | None:
        """The round-0 model; every node starts from it, so it must come from the seed alone."""
        return init_parameters(spec, seed)

    def configure_fit(self, server_round: int) -> dict[str, Any]:
        """Extra training configuration sent to nodes for this round (for example a proximal term)."""
        return {}

    @abstractmethod
    def aggregate_fit(
        self,
        server_round: int,
        parameters: NDArrays,
        results: list[FitRes],
        failures: list[str],
    ) -> tuple[NDArrays | None, dict[str, float]]:
        """Combine results into the next global model.

        `parameters` is the current global model. Returning None as the parameters means "keep the
        current model". Failures are reported here, never raised.
        """
