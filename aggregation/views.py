"""The live dashboard page; its data comes from the websocket and /api/dashboard."""
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from aggregation.dashboard import dashboard_access_allowed


def dashboard(request: HttpRequest) -> HttpResponse:
    if not dashboard_access_allowed(request.user):
        # The admin's login form is the only one this project has.
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    return render(request, "dashboard.html")
