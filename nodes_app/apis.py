"""Node API: enrollment and the node list."""
import unicodedata

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation.selectors import experiment_get
from fedsite.schema import EXPERIMENT, errors
from nodes_app import selectors, services
from nodes_app.auth import IsNode, NodeTokenAuthentication, node_required, request_node
from nodes_app.models import Node
from nodes_app.serializers import NodeEnrolledSerializer, NodeRegisterInputSerializer, NodeSerializer


def node_payload(node: Node, last_round: int | None = None) -> dict:
    return {
        "node_id": node.node_id,
        "address": node.address,
        "status": node.status,
        "last_seen": node.last_seen.isoformat() if node.last_seen else None,
        "source": node.source,
        "last_round": last_round,
        "experiment": node.experiment.name if node.experiment is not None else None,
        "done_at": node.done_at.isoformat() if node.done_at else None,
        "data": node.data,
    }


class NodeListApi(APIView):
    """The prototype's `GET /api/nodes`, with identity, status and last contact."""

    @extend_schema(operation_id="nodes_list", responses={200: NodeSerializer(many=True), **errors(401)})
    def get(self, request: Request) -> Response:
        nodes = selectors.node_list()
        return Response(NodeSerializer([node_payload(n, n.last_round) for n in nodes], many=True).data)


class NodeRegisterApi(APIView):
    """Enroll a node (201 with its token), or update the address of the node whose token is sent."""

    InputSerializer = NodeRegisterInputSerializer
    authentication_classes = [NodeTokenAuthentication]  # optional: with a token, the node updates its address

    @extend_schema(
        operation_id="nodes_register",
        description="Without a token: enroll `node_id` with the `X-Enrollment-Token` header (201, with the node's "
                    "token). With a node's token: update its address (200).",
        parameters=[OpenApiParameter("X-Enrollment-Token", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                     description="The server's FL_ENROLLMENT_TOKEN (not needed with DEBUG=1).")],
        request=NodeRegisterInputSerializer,
        responses={200: NodeSerializer, 201: NodeEnrolledSerializer, **errors(400, 401, 403, 409)},
        auth=[{"nodeToken": []}, {}],  # type: ignore[list-item]  # security requirement objects, as above
    )
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else None
        serializer = self.InputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        node = request_node(request)
        if node is not None:
            requested = serializer.validated_data.get("node_id")
            if requested is not None and unicodedata.normalize("NFKC", requested) != node.node_id:
                return Response(
                    {"error": "wrong_node", "detail": f"This token belongs to node {node.node_id}, not {requested}."},
                    status=403,
                )
            services.node_update_address(node, serializer.validated_data["address"],
                                         serializer.validated_data.get("data"))
            return Response(NodeSerializer(node_payload(node)).data, status=200)
        node_id = serializer.validated_data.get("node_id")
        if node_id is None:
            return Response({"error": "invalid", "detail": "node_id: This field is required."}, status=400)
        node, token = services.node_register(
            node_id=node_id,
            address=serializer.validated_data["address"],
            enrollment_token=request.META.get("HTTP_X_ENROLLMENT_TOKEN"),
            data=serializer.validated_data.get("data"),
        )
        return Response(NodeEnrolledSerializer({**node_payload(node), "token": token}).data, status=201)


class NodeDoneApi(APIView):
    """A node says it is leaving cleanly because its experiment's run ended: it shows as done, not offline."""

    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsNode]

    @extend_schema(
        operation_id="nodes_done", parameters=[EXPERIMENT], request=None,
        description="Called by a node once its run has finished or been stopped (409 `run_not_over` before). The "
                    "node's status is `done` until it trains or registers again.",
        responses={200: NodeSerializer, **errors(401, 404, 409)},
    )
    def post(self, request: Request) -> Response:
        node = services.node_done(node_required(request), experiment_get(request.query_params.get("experiment")))
        return Response(NodeSerializer(node_payload(node, selectors.node_last_round(node))).data)
