"""Selectors read: the node list the API and the dashboard show."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django.db.models import Max, QuerySet

from nodes_app.models import Node

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class LastRound(TypedDict):
    last_round: int | None


def node_list() -> QuerySet[WithAnnotations[Node, LastRound]]:
    """Every node by id, each annotated with `last_round`: the highest round number it uploaded to (None if none)."""
    return Node.objects.annotate(last_round=Max("updates__round__number")).order_by("node_id")
