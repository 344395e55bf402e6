"""The live dashboard page; its data comes from the websocket and /api/dashboard."""
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from aggregation.dashboard import dashboard_access_allowed

# The page loads its scripts and styles from this server only and runs no inline code, so an injected
# node id or metric name could never run as script even if it escaped rendering.
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'")


def dashboard(request: HttpRequest) -> HttpResponse:
    if not dashboard_access_allowed(request.user):
        # The admin's login form is the only one this project has.
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    response = render(request, "dashboard.html")
    response["Content-Security-Policy"] = DASHBOARD_CSP
    return response
