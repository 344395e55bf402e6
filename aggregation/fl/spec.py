"""The model's shape and task: layer sizes of the shared multilayer perceptron, validated on construction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_PARAMS = 100_000_000
TASKS = ("regression", "classification")


def is_int(value: object) -> bool:
    # bool is an int subclass, but `true` is never a sensible layer size.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class MLPSpec:
    """Layer sizes from input to output and the task; the default is the prototype's 10-64-1 regressor.

    A regression model has a linear output and the loss ½·MSE; a classification model has one output
    per class, a softmax and the cross-entropy loss.
    """

    layers: tuple[int, ...] = (10, 64, 1)
    task: str = "regression"

    def __post_init__(self) -> None:
        # Validating here means no code path can hold an MLPSpec that cannot be built.
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if len(layers) < 2:
            msg = f"a model needs at least an input and an output layer, got {len(layers)} layer size(s)"
            raise ValueError(msg)
        for position, size in enumerate(layers):
            if not is_int(size) or size <= 0:
                msg = f"layer sizes must be positive integers, got {size!r} at position {position}"
                raise ValueError(msg)
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose 'regression' or 'classification'")
        if self.task == "classification" and layers[-1] < 2:
            msg = f"a classifier needs one output per class, at least 2, got an output layer of {layers[-1]}"
            raise ValueError(msg)
        total = self.num_params()
        if total > MAX_PARAMS:
            msg = f"this model would have {total} parameters, more than the limit of {MAX_PARAMS}"
            raise ValueError(msg)

    def names(self) -> list[str]:
        names: list[str] = []
        for i in range(1, len(self.layers)):
            names += [f"w{i}", f"b{i}"]
        return names

    def shapes(self) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        for fan_in, fan_out in zip(self.layers[:-1], self.layers[1:]):
            shapes += [(fan_in, fan_out), (fan_out,)]
        return shapes

    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes())

    @property
    def classes(self) -> int:
        """Number of classes of a classifier; 0 for a regression model."""
        return self.layers[-1] if self.task == "classification" else 0

    def to_dict(self) -> dict[str, Any]:
        # The task is written only when it is not the default, so the prototype's spec keeps its exact JSON.
        d: dict[str, Any] = {"kind": "mlp", "layers": list(self.layers)}
        if self.task != "regression":
            d["task"] = self.task
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MLPSpec:
        """Build a spec from its JSON form, raising ValueError with a readable sentence if it is wrong."""
        try:
            d = dict(d)
        except (TypeError, ValueError):
            raise ValueError(
                f"a model spec must be a JSON object, got {type(d).__name__}"
            ) from None
        kind = d.get("kind", "mlp")
        if kind != "mlp":
            msg = f"unknown model kind {kind!r}; the only supported kind is 'mlp'"
            raise ValueError(msg)
        unexpected = sorted(str(key) for key in d if key not in ("kind", "layers", "task"))
        if unexpected:
            msg = f"unexpected key(s) in the model spec: {', '.join(map(repr, unexpected))}"
            raise ValueError(msg)
        layers = d.get("layers")
        task = d.get("task", "regression")
        if isinstance(layers, (list, tuple)):
            return cls(tuple(layers), task)
        msg = f"the model spec needs 'layers', a list of layer sizes, got {layers!r}"
        raise ValueError(msg)
