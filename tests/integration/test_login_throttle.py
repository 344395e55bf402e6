"""Guessing an operator's password: after FL_LOGIN_MAX_FAILURES failures an address must wait."""
import base64

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def operator():
    cache.clear()
    get_user_model().objects.create_superuser("op", "op@example.org", "right-password")
    get_user_model().objects.create_superuser("other", "o@example.org", "other-password")
    yield
    cache.clear()


def sign_in(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_the_admin_login_refuses_an_address_after_five_failures_even_with_the_right_password():
    client = Client()

    failures = [sign_in(client, "op", f"guess-{i}").status_code for i in range(5)]
    blocked = sign_in(client, "op", "right-password")

    assert failures == [200] * 5  # the form again, with its error
    assert blocked.status_code == 429 and b"Too many failed sign-ins" in blocked.content
    assert sign_in(Client(), "other", "other-password").status_code == 302  # another account still signs in


def test_a_successful_sign_in_clears_the_count():
    client = Client()
    for i in range(4):
        sign_in(client, "op", f"guess-{i}")

    assert sign_in(client, "op", "right-password").status_code == 302
    assert [sign_in(Client(), "op", f"again-{i}").status_code for i in range(4)] == [200] * 4


def basic(user: str, password: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_operator_api_throttles_basic_auth_the_same_way(api):
    answers = [api.post("/api/experiments", {"name": "x"}, format="json", **basic("op", f"guess-{i}")).status_code
               for i in range(5)]
    blocked = api.post("/api/experiments", {"name": "x"}, format="json", **basic("op", "right-password"))

    assert answers == [401] * 5
    assert (blocked.status_code, blocked.json()["error"]) == (429, "throttled")


def test_behind_a_proxy_the_client_is_the_forwarded_address_not_the_proxy(settings):
    settings.FL_BEHIND_PROXY = True
    attacker = Client(HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="10.0.0.1")

    for i in range(5):
        sign_in(attacker, "op", f"guess-{i}")

    blocked = sign_in(attacker, "op", "right-password")
    colleague = sign_in(Client(HTTP_X_FORWARDED_FOR="198.51.100.7", REMOTE_ADDR="10.0.0.1"), "op", "right-password")
    assert (blocked.status_code, colleague.status_code) == (429, 302)
