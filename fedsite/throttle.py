"""Sign-in throttling for the admin's login form and the operator API's basic auth: after too many
failures for one account from one address (or from one address overall) sign-ins wait a while."""
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled


def _keys(ip: str, username: str) -> tuple[str, str]:
    return f"fl-login:{ip}:{username.lower()[:150]}", f"fl-login:{ip}"


def login_wait_s(ip: str, username: str) -> int:
    """Seconds until this address may try this account again; 0 when it may now."""
    account, address = _keys(ip, username)
    now = time.time()
    for key, limit in ((account, settings.FL_LOGIN_MAX_FAILURES), (address, settings.FL_LOGIN_MAX_FAILURES * 4)):
        failures = [t for t in cache.get(key, []) if t > now - settings.FL_LOGIN_WINDOW_S]
        if len(failures) >= limit:
            return int(min(failures) + settings.FL_LOGIN_WINDOW_S - now) + 1
    return 0


def login_failed(ip: str, username: str) -> None:
    now = time.time()
    for key in _keys(ip, username):
        recent = [t for t in cache.get(key, []) if t > now - settings.FL_LOGIN_WINDOW_S]
        cache.set(key, [*recent, now][-200:], timeout=int(settings.FL_LOGIN_WINDOW_S) + 1)


def login_succeeded(ip: str, username: str) -> None:
    cache.delete(_keys(ip, username)[0])


def client_ip(request: Any) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


class ThrottledBasicAuthentication(BasicAuthentication):
    """DRF's HTTP basic auth for operators, with the admin login's failure throttle."""

    def authenticate_credentials(self, userid: str, password: str, request: Any = None) -> Any:
        ip = client_ip(request) if request is not None else "unknown"
        wait = login_wait_s(ip, userid)
        if wait:
            raise Throttled(wait, "Too many failed sign-ins for this account from this address.")
        try:
            result = super().authenticate_credentials(userid, password, request)
        except AuthenticationFailed:
            login_failed(ip, userid)
            raise
        login_succeeded(ip, userid)
        return result


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's login view, refusing an address that failed too often for an account (429)."""
    from django.contrib import admin

    username = request.POST.get("username", "") if request.method == "POST" else ""
    ip = client_ip(request)
    if request.method == "POST":
        wait = login_wait_s(ip, username)
        if wait:
            return HttpResponse(f"Too many failed sign-ins for this account from this address; try again in "
                                f"{math.ceil(wait / 60)} minute(s).\\n", status=429, content_type="text/plain")
    response = admin.site.login(request)
    if request.method == "POST":
        if response.status_code == 302 and request.user.is_authenticated:
            login_succeeded(ip, username)
        else:
            login_failed(ip, username)
    return response
