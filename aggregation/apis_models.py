"""Bring-your-own-model APIs: operators create experiments over any tensors; nodes provide a waiting
experiment's initial model and report federated evaluations."""
from typing import Any, NoReturn

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation import parsing
from aggregation.apis import ExperimentListApi, body_read, experiment_from
from aggregation.fl.initfile import initial_model_loads
from aggregation.fl.serde import SerdeError
from aggregation.models import Experiment
from aggregation.serializers import shaped
from aggregation.serializers_models import (
    EvaluationInputSerializer,
    EvaluationOutputSerializer,
    ExperimentActionInputSerializer,
    ExperimentActionOutputSerializer,
    ExperimentCreatedSerializer,
    ExperimentCreateInputSerializer,
    ModelInitialOutputSerializer,
    RoundFailureInputSerializer,
    RoundFailureOutputSerializer,
)
from aggregation.services.evaluations import evaluation_submit
from aggregation.services.experiment_setup import OPTIONS, experiment_setup
from aggregation.services.experiments import experiment_initialize_from_node
from aggregation.services.lifecycle import experiment_pause, experiment_reset, experiment_resume, experiment_stop
from aggregation.services.updates import round_failure_report
from fedsite.errors import ApplicationError
from fedsite.jsonparse import BoundedJSONParser, json_loads
from fedsite.schema import EXPERIMENT, errors
from fedsite.throttle import ThrottledBasicAuthentication
from nodes_app.auth import IsNode, NodeTokenAuthentication, node_required
from nodes_app.services import node_touch

# Form fields arrive as strings: these are parsed as JSON (numbers, objects, null) before validation.
JSON_OPTIONS = ("strategy_params", "total_nodes", "min_nodes", "max_rounds", "round_timeout_s", "epochs",
                "learning_rate", "batch_size", "seed", "update_max_norm", "stop_threshold", "stop_patience",
                "model_spec")


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"))


def operator_denied(request: Request) -> NoReturn:
    if request.authenticators and not request.successful_authenticator:
        raise ApplicationError("operator_required", "This needs an operator: a Django staff user's HTTP basic "
                               "credentials or login session (a node's token cannot).", 401)
    raise ApplicationError("operator_required", "This needs a staff user; this one is not.", 403)


class ExperimentActionApi(APIView):
    """An operator pauses, stops, resumes (starts) or resets (rolls back) an experiment's run."""

    authentication_classes = [ThrottledBasicAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> NoReturn:
        operator_denied(request)

    @extend_schema(
        operation_id="experiments_action",
        parameters=[OpenApiParameter("action", OpenApiTypes.STR, OpenApiParameter.PATH,
                                     enum=["pause", "stop", "resume", "start", "reset"])],
        request=ExperimentActionInputSerializer,
        responses={200: ExperimentActionOutputSerializer, **errors(400, 401, 403, 404, 429)},
    )
    def post(self, request: Request, name: str, action: str) -> Response:
        experiment = Experiment.objects.filter(name=name).first()
        if experiment is None:
            raise ApplicationError("unknown_experiment", f"There is no experiment named {name!r}.", 404)
        who = f"{request.user} (API)"
        if action == "stop":
            changed = experiment_stop(experiment, f"stopped by {who}")
        elif action == "pause":
            changed = experiment_pause(experiment, who)
        elif action in ("resume", "start"):
            changed = experiment_resume(experiment)
        elif action == "reset":
            version = request.data.get("version") if isinstance(request.data, dict) else None
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ApplicationError("bad_version", "Send {\"version\": V}, the model version to go back to.")
            changed = experiment_reset(experiment, version, by=who) is not None
        else:
            raise ApplicationError(
                "not_found", f"Experiments have no action {action!r}; use pause, stop, resume, start or reset.", 404)
        latest = experiment.versions.order_by("-version").values_list("version", flat=True).first()
        return Response(shaped(ExperimentActionOutputSerializer, {
            "name": experiment.name, "status": experiment.status, "changed": changed, "model_version": latest}))


class ExperimentsApi(ExperimentListApi):
    """GET lists experiments (as before); POST creates one: operators only (a Django staff user)."""

    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    def _creating(self) -> bool:
        # The schema generator asks without a request.
        return getattr(getattr(self, "request", None), "method", None) == "POST"

    def get_authenticators(self) -> list:
        return [ThrottledBasicAuthentication(), SessionAuthentication()] if self._creating() else []

    def get_permissions(self) -> list:
        return [IsAdminUser()] if self._creating() else []

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> NoReturn:
        operator_denied(request)

    @extend_schema(operation_id="experiments_create", request=ExperimentCreateInputSerializer,
                   responses={201: ExperimentCreatedSerializer, **errors(400, 401, 403, 409, 413, 415, 429)})
    def post(self, request: Request) -> Response:
        data = request.data
        if not hasattr(data, "get"):
            raise ApplicationError("bad_json", "Send a JSON object (or a form) with the experiment's name and options.")
        if "init" in data and "init" not in request.FILES:  # curl -F init=model.safetensors (no @) sends text
            raise ApplicationError("bad_option", "init must be a file upload (curl -F init=@model.safetensors), "
                                   "not a text field.")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ApplicationError("bad_option", "Give the experiment a name (letters, digits, - and _).")
        unknown = sorted(set(data) - {*OPTIONS, "name", "init", "init_from_node"})
        if unknown:
            raise ApplicationError("bad_option", f"Unknown field(s): {', '.join(unknown)}; the fields are name, init, "
                                   f"init_from_node, {', '.join(OPTIONS)}.")
        form = hasattr(data, "getlist")  # multipart or urlencoded: every value is a string
        options: dict[str, Any] = {}
        for key in OPTIONS:
            if key not in data:
                continue
            value = data.get(key)
            if form and key in JSON_OPTIONS and isinstance(value, str):
                try:
                    value = json_loads(value)
                except ValueError:
                    wanted = "a JSON object" if key in ("strategy_params", "model_spec") else "a number"
                    raise ApplicationError("bad_option", f"{key} must be {wanted}, got {value[:40]!r}.") from None
            options[key] = value
        upload = request.FILES.get("init") if hasattr(request, "FILES") else None
        experiment = experiment_setup(
            name=name, init_file=upload.read() if upload is not None else None,
            init_name=upload.name if upload is not None else "", init_from_node=_truthy(data.get("init_from_node")),
            **options,
        )
        return Response(shaped(ExperimentCreatedSerializer, experiment_created_payload(experiment)), status=201)


def experiment_created_payload(experiment: Experiment) -> dict[str, Any]:
    version0 = experiment.versions.defer("parameters", "strategy_state").filter(version=0).first()
    return {"name": experiment.name, "status": experiment.status, "strategy": experiment.strategy,
            "model_spec": experiment.model_spec, "total_nodes": experiment.total_nodes,
            "min_nodes": experiment.min_nodes, "max_rounds": experiment.max_rounds,
            "model_version": 0 if version0 else None, "sha256": version0.sha256 if version0 else None}


class ModelInitialApi(APIView):
    """A node provides the initial model of an experiment created to take it from the first node."""

    parser_classes: list = []
    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsNode]

    @extend_schema(
        operation_id="models_initial", parameters=[EXPERIMENT],
        description="Version 0 of an experiment created with `init_from_node`: safetensors bytes whose metadata "
                    "may carry the manifest. The first node wins; later ones get 409 `already_initialized`.",
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={201: ModelInitialOutputSerializer, **errors(400, 401, 404, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        node = node_required(request)
        experiment = experiment_from(request)
        node_touch(node, experiment)
        if experiment.status != Experiment.Status.INITIALIZING:
            raise ApplicationError("already_initialized", f"Experiment {experiment.name!r} already has its initial "
                                   "model; download it and train.", 409)
        try:
            manifest, params = initial_model_loads(body_read(request))
        except SerdeError as exc:
            raise ApplicationError("bad_safetensors", f"The initial parameters are rejected: {exc}.") from None
        version = experiment_initialize_from_node(experiment, node.node_id, manifest.names(), params)
        return Response(shaped(ModelInitialOutputSerializer, {
            "experiment": experiment.name, "model_version": 0, "sha256": version.sha256, "tensors": len(params)}),
            status=201)


class EvaluationSubmitApi(APIView):
    """A node reports its score of a model version on its own held-out data (federated evaluation)."""

    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsNode]

    @extend_schema(operation_id="evaluations_submit", parameters=[EXPERIMENT], request=EvaluationInputSerializer,
                   responses={200: EvaluationOutputSerializer, 201: EvaluationOutputSerializer,
                              **errors(400, 401, 404, 409, 413)})
    def post(self, request: Request, version: int) -> Response:
        node = node_required(request)
        experiment = experiment_from(request)
        body = parsing.json_body(body_read(request))
        if not isinstance(body, dict):
            raise ApplicationError("bad_json", "Send a JSON object with loss, num_examples and metrics.")
        metrics = parsing.metrics_parse(body.get("metrics"))
        loss = parsing.metrics_parse({"loss": body.get("loss")})["loss"] if body.get("loss") is not None else None
        if loss is None:
            raise ApplicationError("bad_metrics", "loss must be a finite number.")
        evaluation, created = evaluation_submit(experiment=experiment, version_number=version, node=node, loss=loss,
                                                num_examples=parsing.num_examples_parse(body.get("num_examples")),
                                                metrics=metrics)
        summary = experiment.versions.filter(version=version).values_list("evaluation", flat=True).first()
        return Response(shaped(EvaluationOutputSerializer, {
            "model_version": version, "node_id": node.node_id,
            "status": "accepted" if created else "already_accepted", "evaluation": summary}),
            status=201 if created else 200)


class RoundFailureApi(APIView):
    """A node says it cannot train on the round's model, and why: the round then fails instead of waiting."""

    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsNode]

    @extend_schema(operation_id="rounds_failure", parameters=[EXPERIMENT], request=RoundFailureInputSerializer,
                   responses={200: RoundFailureOutputSerializer, 201: RoundFailureOutputSerializer,
                              **errors(400, 401, 404, 409, 413)})
    def post(self, request: Request, number: int) -> Response:
        node = node_required(request)
        experiment = experiment_from(request)
        body = parsing.json_body(body_read(request))
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise ApplicationError("bad_reason", "Send a JSON object with the reason, a sentence, as \"reason\".")
        created = round_failure_report(experiment=experiment, round_number=number, node=node, reason=reason)
        return Response(shaped(RoundFailureOutputSerializer, {
            "round": number, "node_id": node.node_id, "status": "recorded" if created else "already"}),
            status=201 if created else 200)
