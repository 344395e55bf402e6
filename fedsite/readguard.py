"""One checkpoint for reads: with FL_LOGIN_REQUIRED nothing about the federation is readable without
credentials, whichever endpoint is asked (rounds, nodes, models, experiments, the schema, /metrics)."""
import secrets
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from fedsite.errors import error_response

# Always open: the health check, enrollment, the admin (its own login), static files, and the dashboard
# page, which sends a browser to the login form instead of answering JSON.
OPEN_PATHS = ("/status", "/api/nodes/register", "/admin/", "/static/", "/favicon.ico")
OPEN_EXACT = ("/",)


def login_required() -> bool:
    return bool(settings.FL_LOGIN_REQUIRED or settings.FL_DASHBOARD_LOGIN_REQUIRED)


def signed_in(user: object) -> bool:
    """A Django (or Channels scope) user who is logged in and active."""
    return bool(user is not None and getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


def read_allowed(request: HttpRequest) -> bool:
    """A logged-in user, an enrolled node's token, or (for /metrics) the metrics token."""
    from nodes_app.auth import bearer_token, node_for_token

    if signed_in(getattr(request, "user", None)):
        return True
    token = bearer_token(request)
    if not token:
        return False
    if request.path == "/metrics" and settings.FL_METRICS_TOKEN:
        return secrets.compare_digest(token.encode("utf-8", "surrogateescape"), settings.FL_METRICS_TOKEN.encode())
    return node_for_token(request, token) is not None


class ReadProtectionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (login_required() and request.method in ("GET", "HEAD") and request.path not in OPEN_EXACT
                and not request.path.startswith(OPEN_PATHS) and not read_allowed(request)):
            return error_response("login_required", "Reading this server needs a login (sign in at /admin/login/) "
                                  "or a node's token in an 'Authorization: Bearer <token>' header.", 401)
        return self.get_response(request)
