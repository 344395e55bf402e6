"""Selectors read: the node list the API and the dashboard show."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django.db.models import Max, QuerySet

from nodes_app.models import Node

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class LastRound(TypedDict):
    last_round: int | None


# The node's experiment is joined for its name only, not its model manifest.
EXPERIMENT_BLOBS = ("experiment__model_spec", "experiment__strategy_params")


def node_list() -> QuerySet[WithAnnotations[Node, LastRound]]:
    """Every node by id with its experiment, each annotated with `last_round`: the highest round number it
    uploaded to (None if none)."""
    return (Node.objects.select_related("experiment").defer(*EXPERIMENT_BLOBS)
            .annotate(last_round=Max("updates__round__number")).order_by("node_id"))


def node_last_round(node: Node) -> int | None:
    """The highest round number `node` uploaded to, in any experiment (None if none)."""
    return node.updates.aggregate(n=Max("round__number"))["n"]
