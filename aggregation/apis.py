"""HTTP API of the server: thin views that validate, call one service or selector, and serialize."""
import math
import threading
import time
from functools import cache

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation import events, metrics, parsing, selectors, services
from aggregation.dashboard import dashboard_access_allowed, dashboard_snapshot
from aggregation.fl import NDArrays
from aggregation.fl.manifest import manifest_of
from aggregation.fl.model import flatten
from aggregation.models import Experiment
from aggregation.services.experiments import experiment_public_params
from fedsite.errors import ApplicationError
from nodes_app.auth import node_from_request
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
    base = services.round_base_parameters(experiment, number)
    if base is None:
        raise services.round_unknown(experiment, number)
    return base


def parsed_update(request: Request, experiment: Experiment, number: int) -> services.ParsedUpdate:
    spec = services.experiment_spec(experiment)
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
    """The prototype's health check; read-only."""

    def get(self, request: Request) -> Response:
        payload = {"status": "running", "message": "Server is active", "mode": settings.FL_MODE}
        try:
            experiment = experiment_from(request)
        except ApplicationError as exc:
            return Response({**payload, "experiment": None, "detail": exc.detail})
        state = selectors.round_state(experiment)
        return Response({
            **payload,
            "experiment": experiment.name,
            "round": state["number"],
            "round_status": state["status"],
            "model_version": state["run"]["model_version"],
            "run_status": experiment.status,
        })


class ExperimentListApi(APIView):
    def get(self, request: Request) -> Response:
        return Response([
            {
                "name": e.name, "status": e.status, "strategy": e.strategy,
                "strategy_params": experiment_public_params(e.strategy_params),
                "model_spec": e.model_spec, "total_nodes": e.total_nodes, "min_nodes": e.min_nodes,
                "round_timeout_s": e.round_timeout_s, "on_timeout": e.on_timeout, "max_rounds": e.max_rounds,
                "epochs": e.epochs, "learning_rate": e.learning_rate, "batch_size": e.batch_size,
                "update_max_norm": e.update_max_norm, "update_norm_mode": e.update_norm_mode,
                "update_encoding": e.update_encoding, "feature_scaling": e.feature_scaling,
                "server_eval": e.server_eval, "stop_metric": e.stop_metric, "stop_op": e.stop_op,
                "stop_threshold": e.stop_threshold, "stop_patience": e.stop_patience, "finish_reason": e.finish_reason,
            }
            for e in Experiment.objects.all()
        ])


# Seconds between a waiting long-poll's re-checks: in the embedded mode every change is committed in
# this process and wakes the poll itself, so the re-check is only a safety net.
LONGPOLL_RECHECK_S = {"embedded": 5.0, "scaled": 1.0}


class RoundCurrentApi(APIView):
    """The open round; with ?wait=S&known=N a long-poll that answers as soon as round N is over."""

    def get(self, request: Request) -> Response:
        experiment = experiment_from(request)
        node = node_from_request(request, required=False)
        if node is not None:
            node_touch(node)
        try:
            wait = float(request.query_params.get("wait", 0))
            known = request.query_params.get("known")
            known_number = int(known) if known not in (None, "") else None
            if not math.isfinite(wait):  # NaN would never compare as expired: a request held forever
                raise ValueError("wait is not finite")
        except ValueError:
            raise ApplicationError("bad_query", "wait must be a number of seconds and known a round number.") from None
        wait = min(max(wait, 0.0), settings.FL_LONGPOLL_MAX_S)
        until = time.monotonic() + wait
        marker = selectors.round_marker(experiment)
        # Only the round number or the run's end can answer the poll, so the wait re-checks that
        # in one cheap query; the full state is built once, for the answer.
        waiting = (Experiment.Status.RUNNING, Experiment.Status.INITIALIZING)
        while marker[0] == known_number and marker[1] in waiting:
            remaining = until - time.monotonic()
            if remaining <= 0:
                break
            # Woken at once by round changes committed in this process; changes committed by a
            # Celery worker (scaled mode) are seen at the next re-check.
            with events.state_changed:
                events.state_changed.wait(timeout=min(LONGPOLL_RECHECK_S[settings.FL_MODE], remaining))
            marker = selectors.round_marker(experiment)
        if marker[1] != experiment.status:  # the run ended, resumed or got its first model during the wait
            experiment.refresh_from_db()
        return Response(selectors.round_state(experiment))


class RoundListApi(APIView):
    def get(self, request: Request) -> Response:
        experiment = experiment_from(request)
        return Response({"experiment": experiment.name, "rounds": selectors.rounds_history(experiment)})


class RoundDetailApi(APIView):
    """One round with every update: node, examples, metrics, distance from the base model, validation."""

    def get(self, request: Request, number: int) -> Response:
        return Response(selectors.round_detail(experiment_from(request), number))


class UpdateSubmitApi(APIView):
    """A node uploads its update for a round: safetensors or JSON, with its token."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        metrics.rejection_count(response.data)
        return response

    @extend_schema(request=None, responses=None)
    def post(self, request: Request, number: int) -> Response:
        node = node_from_request(request)
        experiment = experiment_from(request)
        # The body is read into memory only inside a slot: ten 40 MB uploads at once held 2 GB.
        with upload_slots(settings.FL_UPLOAD_CONCURRENCY):
            update = parsed_update(request, experiment, number)
            stored, created = services.update_submit(
                experiment=experiment, round_number=number, node=node, update=update
            )
        return Response(
            {"round": number, "node_id": node.node_id, "sha256": stored.sha256,
             "received": stored.round.updates.count(), "required": experiment.total_nodes,
             "status": "accepted" if created else "already_accepted"},
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


class ModelVersionDetailApi(APIView):
    def get(self, request: Request, version: str) -> Response:
        found = selectors.model_version_get(experiment_from(request), version)
        return Response(_version_payload(found))


class ModelVersionDownloadApi(APIView):
    """safetensors bytes by default; ?format=json gives the flat parameter list."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple:
        # The binary answer bypasses DRF's renderers, so an `Accept: application/octet-stream` is fine.
        return super().perform_content_negotiation(request, force=True)

    def get(self, request: Request, version: str) -> Response | HttpResponse:
        experiment = experiment_from(request)
        found = selectors.model_version_get(experiment, version)
        if request.query_params.get("format") == "json":
            params = selectors.version_parameters(found.pk, found.sha256)
            # The flat list is the tensors of `tensors`, in that order, each row-major.
            tensors = manifest_of(services.experiment_spec(experiment)).to_dict()["tensors"]
            return Response({**_version_payload(found), "tensors": tensors, "parameters": flatten(params).tolist()})
        response = HttpResponse(selectors.version_blob(found.pk, found.sha256), content_type="application/octet-stream")
        response["X-Model-Sha256"] = found.sha256
        response["X-Model-Version"] = str(found.version)
        response["Content-Disposition"] = f'attachment; filename="{experiment.name}-v{found.version}.safetensors"'
        return response


class ModelParamsApi(APIView):
    """The prototype's `GET /api/model/params`: the latest global model as a flat list."""

    def get(self, request: Request) -> Response:
        experiment = experiment_from(request)
        latest = selectors.model_version_latest(experiment)
        params = selectors.version_parameters(latest.pk, latest.sha256)
        flat = flatten(params)
        return Response({"status": "success", "parameters": flat.tolist(), "size": int(flat.size),
                         "version": latest.version, "sha256": latest.sha256})


class DashboardSnapshotApi(APIView):
    """The dashboard's data in one call (its polling fallback); behind a login with FL_DASHBOARD_LOGIN_REQUIRED."""

    authentication_classes = [SessionAuthentication]

    def get(self, request: Request) -> Response:
        if not dashboard_access_allowed(request.user):
            raise ApplicationError("login_required", "The dashboard needs a login; sign in at /admin/login/.", 401)
        return Response(dashboard_snapshot(request.query_params.get("experiment")))
