"""Refuse a NUL character in a request's path, query string or cookies before anything reads them.

No name, token or parameter of this server can hold one, and PostgreSQL cannot store or compare one: a NUL
that reached a query (`?experiment=%00`, a session cookie) was a 500 there and a silent miss on SQLite.
"""
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from fedsite.errors import error_response


class NulGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if ("\x00" in request.path or "\x00" in request.META.get("QUERY_STRING", "")
                or "%00" in request.META.get("QUERY_STRING", "")
                or any("\x00" in k or "\x00" in v for k, v in request.COOKIES.items())):
            return error_response("bad_request", "The request's path, query or cookies contain a NUL character.",
                                  400)
        return self.get_response(request)
