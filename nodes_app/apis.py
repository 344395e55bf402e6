"""Node API: enrollment and the node list."""
import unicodedata

from django.db.models import Max
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from nodes_app import services
from nodes_app.auth import node_from_request
from nodes_app.models import Node


def node_payload(node: Node, last_round: int | None = None) -> dict:
    return {
        "node_id": node.node_id,
        "address": node.address,
        "status": node.status,
        "last_seen": node.last_seen.isoformat() if node.last_seen else None,
        "source": node.source,
        "last_round": last_round,
    }


class NodeListApi(APIView):
    """The prototype's `GET /api/nodes`, with identity, status and last contact."""

    def get(self, request: Request) -> Response:
        nodes = Node.objects.annotate(last_round=Max("updates__round__number")).order_by("node_id")
        return Response([node_payload(n, n.last_round) for n in nodes])


class NodeRegisterApi(APIView):
    """Enroll a node (201 with its token), or update the address of the node whose token is sent."""

    class InputSerializer(serializers.Serializer):
        node_id = serializers.CharField(max_length=64, trim_whitespace=False, required=False)
        address = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")

    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else None
        serializer = self.InputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        node = node_from_request(request, required=False)
        if node is not None:
            requested = serializer.validated_data.get("node_id")
            if requested is not None and unicodedata.normalize("NFKC", requested) != node.node_id:
                return Response(
                    {"error": "wrong_node", "detail": f"This token belongs to node {node.node_id}, not {requested}."},
                    status=403,
                )
            services.node_update_address(node, serializer.validated_data["address"])
            return Response(node_payload(node), status=200)
        node_id = serializer.validated_data.get("node_id")
        if node_id is None:
            return Response({"error": "invalid", "detail": "node_id: This field is required."}, status=400)
        node, token = services.node_register(
            node_id=node_id,
            address=serializer.validated_data["address"],
            enrollment_token=request.META.get("HTTP_X_ENROLLMENT_TOKEN"),
        )
        return Response({**node_payload(node), "token": token}, status=201)
