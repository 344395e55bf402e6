"""One error type for domain failures and one handler that turns every API error into 4xx JSON."""
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApplicationError(Exception):
    """A failure a client can understand: a stable code, a human sentence and an HTTP status."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, detail: str, status_code: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def error_response(code: str, detail: str, status_code: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status_code)


_DRF_CODES = {
    exceptions.ParseError: "bad_json",
    exceptions.AuthenticationFailed: "bad_token",
    exceptions.NotAuthenticated: "missing_token",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def _flatten(detail: Any, prefix: str = "") -> str:
    if isinstance(detail, dict):
        return "; ".join(_flatten(v, f"{prefix}{k}: ") for k, v in detail.items())
    if isinstance(detail, list):
        return "; ".join(_flatten(v, prefix) for v in detail)
    return f"{prefix}{detail}"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"error": "too_large", "detail": "The request body is larger than this server accepts."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    detail = _flatten(getattr(exc, "detail", str(exc)))
    if code == "bad_json":
        detail = f"The request body is not valid JSON ({detail})."
    response.data = {"error": code, "detail": detail}
    return response
