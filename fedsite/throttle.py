"""Sign-in throttling for the admin's login form and the operator API's basic auth: after too many
failures for one account from one address (or from one address overall) sign-ins wait a while."""
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework.authentication import BasicAuthentication
from rest_framework.exceptions import Throttled


def _keys(ip: str, username: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """The counters of this window (fixed windows: a count is one atomic increment, whatever the process)."""
    window = int(time.time() // settings.FL_LOGIN_WINDOW_S)
    limit = settings.FL_LOGIN_MAX_FAILURES
    return (f"fl-login:{window}:{ip}:{username.lower()[:150]}", limit), (f"fl-login:{window}:{ip}", limit * 4)


def _wait() -> int:
    return int(settings.FL_LOGIN_WINDOW_S - time.time() % settings.FL_LOGIN_WINDOW_S) + 1


def login_attempt(ip: str, username: str) -> int:
    """Count a sign-in attempt before checking it: seconds to wait if this address is over its limit, else 0.

    Counted first so parallel attempts cannot all slip under the limit; a success takes its count back.
    """
    over = False
    for key, limit in _keys(ip, username):
        cache.add(key, 0, timeout=int(settings.FL_LOGIN_WINDOW_S) + 1)
        try:
            over |= cache.incr(key) > limit
        except ValueError:  # expired between add and incr: a new window
            cache.add(key, 1, timeout=int(settings.FL_LOGIN_WINDOW_S) + 1)
    return _wait() if over else 0


def login_succeeded(ip: str, username: str) -> None:
    for key, _limit in _keys(ip, username):
        try:
            cache.decr(key)
        except ValueError:
            pass
    cache.delete(_keys(ip, username)[0][0])


def client_ip(request: Any) -> str:
    """The client's address; behind a TLS proxy (FL_BEHIND_PROXY=1), the one that proxy appended."""
    if settings.FL_BEHIND_PROXY:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if forwarded:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


class ThrottledBasicAuthentication(BasicAuthentication):
    """DRF's HTTP basic auth for operators, with the admin login's failure throttle."""

    def authenticate_credentials(self, userid: str, password: str, request: Any = None) -> Any:
        ip = client_ip(request) if request is not None else "unknown"
        wait = login_attempt(ip, userid)
        if wait:
            raise Throttled(wait, "Too many failed sign-ins for this account from this address.")
        result = super().authenticate_credentials(userid, password, request)  # AuthenticationFailed: it counts
        login_succeeded(ip, userid)
        return result


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's login view, refusing an address that failed too often for an account (429)."""
    from django.contrib import admin

    username = request.POST.get("username", "") if request.method == "POST" else ""
    ip = client_ip(request)
    if request.method == "POST":
        wait = login_attempt(ip, username)
        if wait:
            return HttpResponse(f"Too many failed sign-ins for this account from this address; try again in "
                                f"{math.ceil(wait / 60)} minute(s).\n", status=429, content_type="text/plain")
    response = admin.site.login(request)
    if request.method == "POST" and response.status_code == 302 and request.user.is_authenticated:
        login_succeeded(ip, username)
    return response
