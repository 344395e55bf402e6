"""Node enrollment, tokens and the node list."""
import hashlib

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from nodes_app.models import Node
from tests.conftest import params_for

pytestmark = pytest.mark.django_db
ENROLL = {"HTTP_X_ENROLLMENT_TOKEN": "test-enrollment-token"}


def _register(api, payload, **headers):
    return api.post("/api/nodes/register", payload, format="json", **headers)


def test_node_register_returns_a_token_that_is_stored_only_as_a_hash(api):
    response = _register(api, {"node_id": "7", "address": "http://127.0.0.1:8008"}, **ENROLL)

    assert response.status_code == 201
    token = response.json()["token"]
    node = Node.objects.get(node_id="7")
    assert node.address == "http://127.0.0.1:8008"
    assert node.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(Node.objects.values().get())


def test_node_register_refuses_a_taken_id(api, register):
    register("7")

    response = _register(api, {"node_id": "7"}, **ENROLL)

    assert response.status_code == 409 and response.json()["error"] == "node_exists"


@pytest.mark.parametrize(("headers", "code"), [({}, "bad_enrollment_token"),
                                               ({"HTTP_X_ENROLLMENT_TOKEN": "wrong"}, "bad_enrollment_token")])
def test_node_register_needs_the_enrollment_token(api, headers, code):
    response = _register(api, {"node_id": "7"}, **headers)

    assert response.status_code == 403 and response.json()["error"] == code
    assert not Node.objects.exists()


@override_settings(FL_ENROLLMENT_TOKEN="", DEBUG=False)
def test_node_register_is_closed_without_an_enrollment_token_in_production(api):
    response = _register(api, {"node_id": "7"})

    assert response.status_code == 403 and response.json()["error"] == "enrollment_closed"
    assert "createnode" in response.json()["detail"]


@override_settings(FL_ENROLLMENT_TOKEN="", DEBUG=True)
def test_node_register_is_open_on_a_debug_server_with_a_warning(api, caplog):
    response = _register(api, {"node_id": "7"})

    assert response.status_code == 201
    assert "open enrollment" in caplog.text


@pytest.mark.parametrize("address", ["javascript:alert(1)", "ftp://x", "http://user:pw@host", "http://",
                                     "http://host:99999", "http://a/<script>", "x" * 300])
def test_node_register_rejects_addresses_that_are_not_http_urls(api, address):
    response = _register(api, {"node_id": "7", "address": address}, **ENROLL)

    assert response.status_code == 400
    assert response.json()["error"] in ("bad_address", "invalid")
    assert not Node.objects.exists()


@pytest.mark.parametrize("node_id", ["", "a\nb", "x" * 65])
def test_node_register_rejects_bad_ids(api, node_id):
    response = _register(api, {"node_id": node_id}, **ENROLL)

    assert response.status_code == 400


def test_node_register_with_its_token_updates_the_address(api, register):
    token = register("7", "http://127.0.0.1:8008")

    response = _register(api, {"node_id": "7", "address": "http://10.0.0.5:8008"}, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200 and "token" not in response.json()
    assert Node.objects.get(node_id="7").address == "http://10.0.0.5:8008"


def test_a_token_cannot_act_as_another_node(api, register, uploader, experiment):
    token_a = register("a")
    register("b")

    hijack = _register(api, {"node_id": "b", "address": "http://evil"}, HTTP_AUTHORIZATION=f"Bearer {token_a}")
    uploaded = uploader(token_a, 1, params_for(1))

    assert hijack.status_code == 403 and hijack.json()["error"] == "wrong_node"
    assert Node.objects.get(node_id="b").address == ""
    assert uploaded.json()["node_id"] == "a"


def test_node_list_shows_identity_status_and_last_round(api, register, uploader, experiment):
    token = register("a", "http://127.0.0.1:8002")
    register("b")
    uploader(token, 1, params_for(1))

    nodes = api.get("/api/nodes").json()

    assert [n["node_id"] for n in nodes] == ["a", "b"]
    assert nodes[0] | {"last_seen": None} == {
        "node_id": "a", "address": "http://127.0.0.1:8002", "status": "online", "last_seen": None,
        "source": "api", "last_round": 1, "experiment": experiment.name, "done_at": None, "data": {},
    }
    assert nodes[1]["last_round"] is None and nodes[1]["experiment"] is None


def test_createnode_issues_a_token_that_uploads(capsys, uploader, experiment):
    call_command("createnode", "--id", "cli-1")
    token = capsys.readouterr().out.strip()

    response = uploader(token, 1, params_for(1))

    assert response.status_code == 201 and response.json()["node_id"] == "cli-1"
    assert Node.objects.get(node_id="cli-1").source == "cli"


def test_createnode_refuses_an_existing_node_unless_rotating(capsys, register, uploader, experiment):
    old = register("7")

    with pytest.raises(CommandError, match="--rotate"):
        call_command("createnode", "--id", "7")
    call_command("createnode", "--id", "7", "--rotate")
    new = capsys.readouterr().out.strip()

    assert uploader(old, 1, params_for(1)).status_code == 401
    assert uploader(new, 1, params_for(1)).status_code == 201
