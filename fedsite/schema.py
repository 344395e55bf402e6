"""The OpenAPI contract's shared parts: the error shape, common parameters and error responses, the auth schemes."""
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every error: a 4xx JSON body with a stable code and a sentence; some add context (`current_round`)."""

    error = serializers.CharField(help_text="A stable code, e.g. `bad_token`, `round_closed`, `not_finite`.")
    detail = serializers.CharField(help_text="What went wrong, as a sentence for a human.")
    current_round = serializers.IntegerField(required=False, help_text="With `unknown_round` and `round_closed`.")


# What each status means across the API; an operation lists the ones it can answer.
ERROR_SENTENCES = {
    400: "A malformed request: bad JSON or safetensors, a wrong shape, a value out of range; on every operation, "
         "a NUL character in the path, query or cookies.",
    401: "Credentials missing or wrong: a node's token (`missing_token`, `bad_token`), an operator's login "
         "(`operator_required`), or any login with FL_LOGIN_REQUIRED (`login_required`).",
    403: "Authenticated, but not allowed: a non-staff user, or another node's token.",
    404: "No such experiment, round or model version.",
    409: "A conflict with the server's state: a closed round, a different second upload, an initialized experiment.",
    413: "The body is larger than FL_MAX_UPDATE_BYTES.",
    415: "A Content-Type this operation does not take.",
    429: "Too many failed sign-ins from this address.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error responses of an operation, all in the one error shape."""
    return {s: OpenApiResponse(ErrorSerializer, description=ERROR_SENTENCES[s]) for s in statuses}


EXPERIMENT = OpenApiParameter(
    "experiment", OpenApiTypes.STR, OpenApiParameter.QUERY, required=False,
    description="The experiment's name; absent: the default one (FL_EXPERIMENT).",
)


@extend_schema_field(OpenApiTypes.DATETIME)
class IsoDateTimeField(serializers.CharField):
    """A timestamp the selectors already wrote as ISO 8601 (`2026-01-02T03:04:05.678901+00:00`), passed as is."""


@extend_schema_field({"type": "array", "items": {"type": "number"}})
class NumberListField(serializers.Field):
    """A flat list of numbers passed through untouched: a model's parameters can be millions long."""

    def to_representation(self, value: Any) -> Any:
        return value

    def to_internal_value(self, data: Any) -> Any:
        return data


@extend_schema_field({"type": "object", "additionalProperties": {"type": "number"}})
class NumberMapField(serializers.DictField):
    """Names to numbers (metrics)."""

    child = serializers.FloatField()


class JSONObjectField(serializers.JSONField):
    """A free-form JSON object (a model spec, a strategy's parameters, a strategy's fit config)."""


extend_schema_field({"type": "object", "additionalProperties": {}})(JSONObjectField)


class NodeTokenScheme(OpenApiAuthenticationExtension):
    target_class = "nodes_app.auth.NodeTokenAuthentication"
    name = "nodeToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer",
                "description": "A node's token, from `POST /api/nodes/register` (or `manage.py createnode`)."}


class OperatorBasicScheme(OpenApiAuthenticationExtension):
    target_class = "fedsite.throttle.ThrottledBasicAuthentication"
    name = "basicAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "basic",
                "description": "A Django staff user (an operator); failed sign-ins are throttled (429)."}


# With FL_LOGIN_REQUIRED=1 every read needs a login session or a node's token; otherwise reads are open ({}).
READ_SECURITY: list[dict[str, list]] = [{"nodeToken": []}, {"cookieAuth": []}]


class AutoSchema(SpectacularAutoSchema):
    """Adds the read guard's alternatives to every GET: a node token, a login session, or nothing; and the 400
    every operation can answer (fedsite.requestguard refuses a NUL before any view runs)."""

    def _get_response_bodies(self, direction: Any = "response") -> Any:
        # Not get_response_serializers: @extend_schema(responses=...) replaces that method on the view's schema.
        bodies = super()._get_response_bodies(direction)
        if "400" not in bodies:
            bodies["400"] = self._get_response_for_code(errors(400)[400], "400", direction=direction)
        return bodies

    def get_auth(self) -> list[dict[str, list]]:
        auths = super().get_auth()
        if self.method == "GET":
            for requirement in [*getattr(self.view, "read_security", READ_SECURITY), {}]:
                if requirement not in auths:
                    auths.append(requirement)
        return auths
