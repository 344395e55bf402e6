"""The Rust prototype's `POST /message`: externally tagged NodeMessage JSON, now with identity."""
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation import parsing, selectors, services
from aggregation.apis import body_read, experiment_from
from fedsite.errors import ApplicationError
from nodes_app import services as node_services
from nodes_app.apis import node_payload
from nodes_app.auth import node_from_request

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


class MessageApi(APIView):
    def post(self, request: Request) -> Response:
        name, content = _variant(parsing.json_body(body_read(request)))
        if name == "RegisterNode":
            return self._register(request, content)
        return self._update_model(request, content)

    def _register(self, request: Request, content: dict) -> Response:
        address = content.get("addr", "")
        node = node_from_request(request, required=False)
        if node is not None:
            node_services.node_update_address(node, address)
            return Response({**node_payload(node), "node_status": node.status, "status": "success"})
        # The prototype had no node ids: the address was the identity, so it stays the default.
        node_id = content.get("node_id", address)
        node, token = node_services.node_register(
            node_id=node_id, address=address, enrollment_token=request.META.get("HTTP_X_ENROLLMENT_TOKEN")
        )
        return Response({**node_payload(node), "token": token, "node_status": node.status, "status": "success"},
                        status=201)

    def _update_model(self, request: Request, content: dict) -> Response:
        node = node_from_request(request)
        experiment = experiment_from(request)
        spec = services.experiment_spec(experiment)
        update = services.ParsedUpdate(
            parameters=parsing.parameters_from_json(spec, content.get("params")),
            # The prototype sent no sample count; 1 keeps its plain mean among such nodes.
            num_examples=parsing.num_examples_parse(content.get("num_examples", 1)),
            metrics=parsing.metrics_parse(content.get("metrics")),
        )
        state = selectors.round_state(experiment)
        number = content.get("round", state["number"])
        if isinstance(number, bool) or not isinstance(number, int):
            raise ApplicationError("bad_round", "round must be a round number.")
        stored, created = services.update_submit(experiment=experiment, round_number=number, node=node, update=update)
        return Response(
            {"status": "success", "round": number, "node_id": node.node_id, "sha256": stored.sha256,
             "received": stored.round.updates.count(), "required": experiment.total_nodes},
            status=201 if created else 200,
        )
