"""FL_LOGIN_REQUIRED: one setting closes every read of the federation to anyone without credentials."""
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

READS = ["/api/nodes", "/api/rounds?experiment=exp", "/api/rounds/1?experiment=exp", "/api/experiments",
         "/api/rounds/current?experiment=exp", "/api/models/0?experiment=exp", "/api/models/0/download?experiment=exp",
         "/api/model/params?experiment=exp", "/api/dashboard?experiment=exp", "/api/schema/", "/metrics"]


@pytest.fixture
def locked(settings, experiment):
    settings.FL_LOGIN_REQUIRED = True
    settings.FL_METRICS_TOKEN = "scrape-me"
    return experiment


@pytest.mark.parametrize("path", READS)
def test_every_read_needs_credentials(locked, path):
    response = Client().get(path)

    assert response.status_code == 401 and response.json()["error"] == "login_required"


@pytest.mark.parametrize("path", READS)
def test_a_logged_in_operator_reads_everything(locked, path):
    client = Client()
    client.force_login(get_user_model().objects.create_user("operator", password="unused"))

    assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", [p for p in READS if p.startswith(("/api/rounds", "/api/models", "/api/model/"))])
def test_a_node_reads_what_it_needs_with_its_token(locked, register, path):
    token = register("n1")

    assert Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_metrics_take_the_metrics_token_and_not_a_wrong_one(locked):
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer guess").status_code == 401


def test_the_health_check_enrollment_and_login_page_stay_open(locked, api):
    assert Client().get("/status").status_code == 200
    assert Client().get("/admin/login/").status_code == 200
    enrolled = api.post("/api/nodes/register", {"node_id": "n2"}, format="json",
                        HTTP_X_ENROLLMENT_TOKEN="test-enrollment-token")
    assert enrolled.status_code == 201
    assert Client().get("/").status_code == 302  # the dashboard page sends a browser to the login form


def test_reads_are_open_when_not_configured(experiment):
    assert Client().get("/api/nodes").status_code == 200
