"""One authentication class for node tokens: every node endpoint refuses the same way, before reading a body."""
import pytest

pytestmark = pytest.mark.django_db

NODE_POSTS = ["/api/rounds/1/updates?experiment=exp", "/api/rounds/1/failures?experiment=exp",
              "/api/models/0/evaluations?experiment=exp", "/api/models/initial?experiment=exp"]


@pytest.mark.parametrize("path", NODE_POSTS)
def test_a_node_endpoint_without_a_token_says_how_to_authenticate(api, experiment, path):
    response = api.post(path, b"not even json", content_type="application/json")

    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="fedsite"'
    assert response.json() == {"error": "missing_token", "detail": "This call needs the node's token in an "
                               "'Authorization: Bearer <token>' header."}


@pytest.mark.parametrize("path", [*NODE_POSTS, "/api/nodes/register", "/message"])
def test_a_wrong_token_is_refused_before_the_body_is_read(api, experiment, path):
    response = api.post(path, b"not even json", content_type="application/json", HTTP_AUTHORIZATION="Bearer nope")

    assert response.status_code == 401
    assert response.json() == {"error": "bad_token", "detail": "The token is not valid for any registered node."}


def test_a_polling_node_is_seen_and_an_anonymous_poll_is_still_answered(api, experiment, register):
    from nodes_app.models import Node

    token = register("poller")
    Node.objects.filter(node_id="poller").update(last_seen=None)

    anonymous = api.get("/api/rounds/current?experiment=exp")
    as_node = api.get("/api/rounds/current?experiment=exp", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert anonymous.status_code == 200 and as_node.status_code == 200
    assert Node.objects.get(node_id="poller").last_seen is not None


def test_a_node_token_is_not_an_operator(api, experiment, register):
    token = register("n1")

    response = api.post("/api/experiments/exp/stop", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 401 and response.json()["error"] == "operator_required"
