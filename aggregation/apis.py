"""HTTP API of the server: thin views that validate, call one service or selector, and serialize."""
import math
import threading
from functools import cache

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation import exports, longpoll, metrics, parsing, selectors
from aggregation.dashboard import dashboard_access_allowed, dashboard_snapshot
from aggregation.fl import NDArrays
from aggregation.fl.manifest import manifest_of
from aggregation.fl.model import flatten
from aggregation.models import Experiment
from aggregation.serializers import (
    DashboardSnapshotSerializer,
    ExperimentSerializer,
    ModelDownloadJsonSerializer,
    ModelParamsSerializer,
    ModelVersionSerializer,
    RoundDetailSerializer,
    RoundHistorySerializer,
    RoundStateSerializer,
    StatusSerializer,
    UpdateAcceptedSerializer,
    UpdateJsonInputSerializer,
    shaped,
)
from aggregation.services.updates import ParsedUpdate, update_submit
from fedsite.errors import ApplicationError
from fedsite.schema import EXPERIMENT, errors
from nodes_app.auth import IsNode, NodeTokenAuthentication, node_required, request_node
from nodes_app.services import node_touch


def body_read(request: Request) -> bytes:
    """The raw body, refused with 413 before reading when it announces more than the server takes."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApplicationError("bad_request", "Content-Length is not a number.") from None
    if length > settings.FL_MAX_UPDATE_BYTES:
        raise ApplicationError(
            "too_large", f"The body has {length} bytes; this server accepts at most {settings.FL_MAX_UPDATE_BYTES}.",
            413,
        )
    return request.body


@cache
def upload_slots(count: int) -> threading.BoundedSemaphore:
    """The semaphore bounding uploads in progress (one per FL_UPLOAD_CONCURRENCY value)."""
    return threading.BoundedSemaphore(count)


def experiment_from(request: Request) -> Experiment:
    return selectors.experiment_get(request.query_params.get("experiment"))


def round_base(experiment: Experiment, number: int) -> NDArrays:
    """Round `number`'s base model: what an fp16/int8 delta upload is decoded against."""
    base = selectors.round_base_parameters(experiment, number)
    if base is None:
        raise selectors.round_unknown(experiment, number)
    return base


def parsed_update(request: Request, experiment: Experiment, number: int) -> ParsedUpdate:
    spec = selectors.experiment_spec(experiment)
    body = body_read(request)
    if not body:
        raise ApplicationError("empty_body", "The upload is empty; send safetensors bytes or a JSON object.")
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type == "application/octet-stream":
        # A compressed upload is decoded whatever the experiment's update_encoding: the body says how.
        return parsing.update_from_safetensors(spec, body, base=lambda: round_base(experiment, number))
    if content_type in ("application/json", ""):
        return parsing.update_from_json(spec, parsing.json_body(body))
    raise ApplicationError("unsupported_media_type", f"Content-Type {content_type!r} is not accepted; use "
                           "application/octet-stream (safetensors) or application/json.", 415)


class StatusApi(APIView):
    """The prototype's health check; read-only, open even with FL_LOGIN_REQUIRED."""

    read_security: list[dict[str, list[str]]] = []

    @extend_schema(parameters=[EXPERIMENT], responses={200: StatusSerializer},
                   auth=[{}])  # type: ignore[list-item]  # security requirement objects: drf-spectacular takes them
    def get(self, request: Request) -> Response:
        payload = {"status": "running", "message": "Server is active", "mode": settings.FL_MODE}
        try:
            experiment = experiment_from(request)
        except ApplicationError as exc:
            return Response(shaped(StatusSerializer, {**payload, "experiment": None, "detail": exc.detail}))
        state = selectors.round_state(experiment)
        return Response(shaped(StatusSerializer, {
            **payload,
            "experiment": experiment.name,
            "round": state["number"],
            "round_status": state["status"],
            "model_version": state["run"]["model_version"],
            "run_status": experiment.status,
        }))


class ExperimentListApi(APIView):
    @extend_schema(operation_id="experiments_list", responses={200: ExperimentSerializer(many=True), **errors(401)})
    def get(self, request: Request) -> Response:
        return Response(shaped(ExperimentSerializer, [
            {
                "name": e.name, "status": e.status, "strategy": e.strategy,
                "strategy_params": selectors.experiment_public_params(e.strategy_params),
                "model_spec": e.model_spec, "total_nodes": e.total_nodes, "min_nodes": e.min_nodes,
                "round_timeout_s": e.round_timeout_s, "on_timeout": e.on_timeout, "max_rounds": e.max_rounds,
                "epochs": e.epochs, "learning_rate": e.learning_rate, "batch_size": e.batch_size,
                "update_max_norm": e.update_max_norm, "update_norm_mode": e.update_norm_mode,
                "update_encoding": e.update_encoding, "feature_scaling": e.feature_scaling,
                "server_eval": e.server_eval, "stop_metric": e.stop_metric, "stop_op": e.stop_op,
                "stop_threshold": e.stop_threshold, "stop_patience": e.stop_patience, "finish_reason": e.finish_reason,
            }
            for e in selectors.experiment_list()
        ], many=True))


class RoundCurrentApi(APIView):
    """The open round; with ?wait=S&known=N a long-poll that answers as soon as round N is over.

    The one GET that writes: a node's poll is its heartbeat, so it records the node's contact (last_seen, at
    most every TOUCH_EVERY) and the experiment it follows (the dashboard lists the node under it). That is
    bookkeeping about the caller, like an access log, which RFC 9110 (9.2.1) allows a safe method: the answer
    does not depend on it, and repeating the request changes nothing more.
    """

    authentication_classes = [NodeTokenAuthentication]  # optional: a node that polls counts as seen

    @extend_schema(
        operation_id="rounds_current",
        parameters=[
            EXPERIMENT,
            OpenApiParameter("wait", OpenApiTypes.NUMBER, description="Long-poll: hold the answer up to this many "
                             "seconds (capped at FL_LONGPOLL_MAX_S, 30 by default) while round `known` is current."),
            OpenApiParameter("known", {"oneOf": [{"type": "integer"}, {"type": "string", "enum": [""]}]},
                             description="Long-poll: the round number the caller knows (empty: none)."),
        ],
        responses={200: RoundStateSerializer, **errors(400, 401, 404)},
    )
    def get(self, request: Request) -> Response:
        experiment = experiment_from(request)
        node = request_node(request)
        if node is not None:
            node_touch(node, experiment)
        try:
            wait = float(request.query_params.get("wait", 0))
            known = request.query_params.get("known")
            known_number = int(known) if known not in (None, "") else None
            if not math.isfinite(wait):  # NaN would never compare as expired: a request held forever
                raise ValueError("wait is not finite")
        except ValueError:
            raise ApplicationError("bad_query", "wait must be a number of seconds and known a round number.") from None
        wait = min(max(wait, 0.0), settings.FL_LONGPOLL_MAX_S)
        state = longpoll.round_state_wait(experiment, known=known_number, wait=wait)
        return Response(shaped(RoundStateSerializer, state))


class RoundListApi(APIView):
    """Every round with its metrics; ?format=csv (one row per round, one column per metric) or json to download."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple:
        # `format` chooses the export here, not a DRF renderer (there is no CSV renderer to find).
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="rounds_list",
        parameters=[EXPERIMENT, OpenApiParameter(
            "format", OpenApiTypes.STR, enum=["json", "csv"],
            description="`csv`: a spreadsheet of the round metrics (one row per round, one column per metric); "
                        "`json`: this answer as a file download. Absent: the JSON answer.")],
        responses={
            (200, "application/json"): RoundHistorySerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="number, status, base_version, "
                                               "model_version, opened_at, closed_at, duration_s, updates, "
                                               "failure_reason, then every metric by name."),
            **errors(400, 401, 404),
        },
    )
    def get(self, request: Request) -> Response | HttpResponse:
        export = request.query_params.get("format")
        if export not in (None, "json", "csv"):
            raise ApplicationError("bad_format", f"format {export!r} is not one of json or csv.")
        experiment = experiment_from(request)
        rounds = selectors.rounds_history(experiment)
        if export == "csv":
            response = HttpResponse(exports.rounds_csv(rounds), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{experiment.name}-rounds.csv"'
            return response
        answer = Response(shaped(RoundHistorySerializer, {"experiment": experiment.name, "rounds": rounds}))
        if export == "json":
            answer["Content-Disposition"] = f'attachment; filename="{experiment.name}-rounds.json"'
        return answer


class RoundDetailApi(APIView):
    """One round with every update: node, examples, metrics, distance from the base model, validation."""

    @extend_schema(operation_id="rounds_detail", parameters=[EXPERIMENT],
                   responses={200: RoundDetailSerializer, **errors(401, 404)})
    def get(self, request: Request, number: int) -> Response:
        return Response(shaped(RoundDetailSerializer, selectors.round_detail(experiment_from(request), number)))


class UpdateSubmitApi(APIView):
    """A node uploads its update for a round: safetensors or JSON, with its token."""

    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsNode]

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        metrics.rejection_count(response.data)
        return response

    @extend_schema(
        operation_id="updates_submit", parameters=[EXPERIMENT],
        description="Safetensors (`application/octet-stream`: float32 tensors, or an fp16/int8 delta, with "
                    "`num_examples` and `metrics` in `__metadata__`) or JSON. 201 on the first upload, 200 when the "
                    "same parameters are sent again (in either form).",
        request={"application/octet-stream": OpenApiTypes.BINARY, "application/json": UpdateJsonInputSerializer},
        responses={200: UpdateAcceptedSerializer, 201: UpdateAcceptedSerializer,
                   **errors(400, 401, 404, 409, 413, 415)},
    )
    def post(self, request: Request, number: int) -> Response:
        node = node_required(request)
        experiment = experiment_from(request)
        # The body is read into memory only inside a slot: ten 40 MB uploads at once held 2 GB.
        with upload_slots(settings.FL_UPLOAD_CONCURRENCY):
            update = parsed_update(request, experiment, number)
            stored, created = update_submit(
                experiment=experiment, round_number=number, node=node, update=update
            )
        return Response(
            shaped(UpdateAcceptedSerializer, {
                "round": number, "node_id": node.node_id, "sha256": stored.sha256,
                "received": stored.round.updates.count(), "required": experiment.total_nodes,
                "status": "accepted" if created else "already_accepted"}),
            status=201 if created else 200,
        )


def _version_payload(version) -> dict:
    return {
        "version": version.version, "sha256": version.sha256, "size": version.size,
        "parent": version.parent.version if version.parent_id else None,
        "round": version.round.number if version.round_id else None,
        "contributors": version.contributors, "evaluation": version.evaluation,
        "created_at": version.created_at.isoformat(),
    }


VERSION = OpenApiParameter("version", OpenApiTypes.STR, OpenApiParameter.PATH,
                           description="A model version number, or `latest`.")


class ModelVersionDetailApi(APIView):
    @extend_schema(operation_id="models_detail", parameters=[VERSION, EXPERIMENT],
                   responses={200: ModelVersionSerializer, **errors(400, 401, 404)})
    def get(self, request: Request, version: str) -> Response:
        found = selectors.model_version_get(experiment_from(request), version)
        return Response(shaped(ModelVersionSerializer, _version_payload(found)))


class ModelVersionDownloadApi(APIView):
    """safetensors bytes by default; ?format=json gives the flat parameter list."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple:
        # The binary answer bypasses DRF's renderers, so an `Accept: application/octet-stream` is fine.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="models_download",
        parameters=[VERSION, EXPERIMENT, OpenApiParameter(
            "format", OpenApiTypes.STR, examples=[OpenApiExample("json", value="json")],
            description="`json`: the parameters as one flat list instead of safetensors bytes (any other value, "
                        "or none: safetensors).")],
        description="The model's safetensors file (its metadata: the manifest and provenance), with headers "
                    "`X-Model-Sha256` and `X-Model-Version`; with `?format=json`, a JSON object instead.",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="safetensors"),
            (200, "application/json"): ModelDownloadJsonSerializer,
            **errors(400, 401, 404),
        },
    )
    def get(self, request: Request, version: str) -> Response | HttpResponse:
        experiment = experiment_from(request)
        found = selectors.model_version_get(experiment, version)
        if request.query_params.get("format") == "json":
            params = selectors.version_parameters(found.pk, found.sha256)
            # The flat list is the tensors of `tensors`, in that order, each row-major.
            tensors = manifest_of(selectors.experiment_spec(experiment)).to_dict()["tensors"]
            return Response(shaped(ModelDownloadJsonSerializer, {
                **_version_payload(found), "tensors": tensors, "parameters": flatten(params).tolist()}))
        response = HttpResponse(selectors.version_blob(found.pk, found.sha256), content_type="application/octet-stream")
        response["X-Model-Sha256"] = found.sha256
        response["X-Model-Version"] = str(found.version)
        response["Content-Disposition"] = f'attachment; filename="{experiment.name}-v{found.version}.safetensors"'
        return response


class ModelParamsApi(APIView):
    """The prototype's `GET /api/model/params`: the latest global model as a flat list."""

    @extend_schema(operation_id="model_params", parameters=[EXPERIMENT],
                   responses={200: ModelParamsSerializer, **errors(401, 404)})
    def get(self, request: Request) -> Response:
        experiment = experiment_from(request)
        latest = selectors.model_version_latest(experiment)
        params = selectors.version_parameters(latest.pk, latest.sha256)
        flat = flatten(params)
        return Response(shaped(ModelParamsSerializer, {
            "status": "success", "parameters": flat.tolist(), "size": int(flat.size),
            "version": latest.version, "sha256": latest.sha256}))


class DashboardSnapshotApi(APIView):
    """The dashboard's data in one call (its polling fallback); behind a login with FL_DASHBOARD_LOGIN_REQUIRED."""

    authentication_classes = [SessionAuthentication]
    # A node's token passes the read guard, but not this view's login check.
    read_security: list[dict[str, list[str]]] = [{"cookieAuth": []}]

    @extend_schema(operation_id="dashboard_snapshot", parameters=[EXPERIMENT],
                   responses={200: DashboardSnapshotSerializer, **errors(401, 404)})
    def get(self, request: Request) -> Response:
        if not dashboard_access_allowed(request.user):
            raise ApplicationError("login_required", "The dashboard needs a login; sign in at /admin/login/.", 401)
        return Response(shaped(DashboardSnapshotSerializer, dashboard_snapshot(request.query_params.get("experiment"))))
