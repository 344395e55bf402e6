"""The live dashboard page; its data comes from the websocket and /api/dashboard."""
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard.html")
