"""Selectors read: the node list the API and the dashboard show."""
from django.db.models import Max, QuerySet

from nodes_app.models import Node


def node_list() -> QuerySet[Node]:
    """Every node by id, each annotated with `last_round`: the highest round number it uploaded to (None if none)."""
    return Node.objects.annotate(last_round=Max("updates__round__number")).order_by("node_id")
