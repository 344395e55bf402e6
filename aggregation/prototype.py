"""The Rust prototype's `POST /message`: externally tagged NodeMessage JSON, now with identity."""
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation import parsing, selectors
from aggregation.apis import body_read, experiment_from
from aggregation.serializers import shaped
from aggregation.services.updates import ParsedUpdate, update_submit
from fedsite.errors import ApplicationError
from fedsite.schema import EXPERIMENT, IsoDateTimeField, NumberMapField, errors
from nodes_app import services as node_services
from nodes_app.apis import node_payload
from nodes_app.auth import NodeTokenAuthentication, node_required, request_node
from nodes_app.serializers import NODE_STATUSES

SERVER_VARIANTS = ("UpdateModel", "RegisterNode")
NODE_VARIANTS = ("Train", "Predict")


def _variant(body: object) -> tuple[str, dict]:
    if not isinstance(body, dict) or len(body) != 1:
        raise ApplicationError("bad_message", "A message is a JSON object with exactly one key: "
                               f"one of {', '.join(SERVER_VARIANTS)}.")
    (name, content), = body.items()
    if name in NODE_VARIANTS:
        raise ApplicationError("wrong_recipient", f"{name} is a message for nodes; send it to a node's /message.")
    if name not in SERVER_VARIANTS:
        raise ApplicationError("unknown_message", f"Unknown message {name!r}; the server takes "
                               f"{', '.join(SERVER_VARIANTS)}.")
    if not isinstance(content, dict):
        raise ApplicationError("bad_message", f"The content of {name} must be a JSON object.")
    return name, content


class UpdateModelContentSerializer(serializers.Serializer):
    params = serializers.ListField(child=serializers.FloatField(), help_text="The flat parameter list (769).")
    num_examples = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False, default=1)
    metrics = NumberMapField(required=False, allow_null=True)
    round = serializers.IntegerField(required=False, help_text="Default: the current round.")


class UpdateModelMessageSerializer(serializers.Serializer):
    UpdateModel = UpdateModelContentSerializer(help_text="An update (the node's token is required).")


class RegisterNodeContentSerializer(serializers.Serializer):
    addr = serializers.CharField(allow_blank=True, allow_null=True, required=False, default="",
                                 help_text="The node's base URL; empty or null: none.")
    node_id = serializers.CharField(required=False, help_text="Default: the address (the prototype had no ids).")


class RegisterNodeMessageSerializer(serializers.Serializer):
    RegisterNode = RegisterNodeContentSerializer(help_text="Enrollment (X-Enrollment-Token), or with a node's "
                                                 "token an address update.")


class MessageRegisteredSerializer(serializers.Serializer):
    """The node (as in `GET /api/nodes`, its status as `node_status`) and the prototype's `status`."""

    node_id = serializers.CharField()
    address = serializers.CharField(allow_blank=True)
    last_seen = IsoDateTimeField(allow_null=True)
    source = serializers.ChoiceField(choices=["api", "cli", "etcd"])  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class
    last_round = serializers.IntegerField(allow_null=True)
    node_status = serializers.ChoiceField(choices=NODE_STATUSES)
    status = serializers.CharField(help_text="Always `success`.")
    token = serializers.CharField(required=False, help_text="Only when a node was enrolled (201).")


class MessageUpdatedSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="Always `success`.")
    round = serializers.IntegerField()
    node_id = serializers.CharField()
    sha256 = serializers.CharField()
    received = serializers.IntegerField()
    required = serializers.IntegerField()  # type: ignore[assignment]  # a wire name: DRF's metaclass moves declared fields off the class


MESSAGE_REPLY = PolymorphicProxySerializer(component_name="MessageReply", resource_type_field_name=None,
                                           serializers=[MessageRegisteredSerializer, MessageUpdatedSerializer])


class MessageApi(APIView):
    authentication_classes = [NodeTokenAuthentication]  # required for UpdateModel, optional for RegisterNode

    @extend_schema(
        operation_id="message", parameters=[EXPERIMENT],
        description="The prototype's externally tagged NodeMessage: exactly one of `UpdateModel` and "
                    "`RegisterNode`.",
        request=PolymorphicProxySerializer(component_name="NodeMessage", resource_type_field_name=None,
                                           serializers=[UpdateModelMessageSerializer, RegisterNodeMessageSerializer]),
        responses={200: MESSAGE_REPLY, 201: MESSAGE_REPLY, **errors(400, 401, 403, 404, 409, 413)},
        auth=[{"nodeToken": []}, {}],  # type: ignore[list-item]  # security requirement objects: drf-spectacular takes them
    )
    def post(self, request: Request) -> Response:
        name, content = _variant(parsing.json_body(body_read(request)))
        if name == "RegisterNode":
            return self._register(request, content)
        return self._update_model(request, content)

    def _register(self, request: Request, content: dict) -> Response:
        address = content.get("addr", "")
        if not isinstance(content.get("node_id", ""), str):
            raise ApplicationError("bad_node_id", "node_id must be a non-empty string.")
        node = request_node(request)
        if node is not None:
            node_services.node_update_address(node, address)
            return Response(shaped(MessageRegisteredSerializer,
                                   {**node_payload(node), "node_status": node.status, "status": "success"}))
        # The prototype had no node ids: the address was the identity, so it stays the default.
        node_id = content.get("node_id", address)
        node, token = node_services.node_register(
            node_id=node_id, address=address, enrollment_token=request.META.get("HTTP_X_ENROLLMENT_TOKEN")
        )
        return Response(shaped(MessageRegisteredSerializer, {
            **node_payload(node), "token": token, "node_status": node.status, "status": "success"}), status=201)

    def _update_model(self, request: Request, content: dict) -> Response:
        node = node_required(request)
        experiment = experiment_from(request)
        spec = selectors.experiment_spec(experiment)
        update = ParsedUpdate(
            parameters=parsing.parameters_from_json(spec, content.get("params")),
            # The prototype sent no sample count; 1 keeps its plain mean among such nodes.
            num_examples=parsing.num_examples_parse(content.get("num_examples", 1)),
            metrics=parsing.metrics_parse(content.get("metrics")),
        )
        state = selectors.round_state(experiment)
        number = content.get("round", state["number"])
        if isinstance(number, bool) or not isinstance(number, int):
            raise ApplicationError("bad_round", "round must be a round number.")
        stored, created = update_submit(experiment=experiment, round_number=number, node=node, update=update)
        return Response(
            shaped(MessageUpdatedSerializer, {
                "status": "success", "round": number, "node_id": node.node_id, "sha256": stored.sha256,
                "received": stored.round.updates.count(), "required": experiment.total_nodes}),
            status=201 if created else 200,
        )
