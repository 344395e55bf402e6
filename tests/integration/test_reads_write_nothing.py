"""A GET changes nothing in the database; the one exception is a node's poll, recording its own contact."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from nodes_app.models import Node
from tests.conftest import params_for

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

GETS = [
    "/", "/status?experiment=exp", "/api/nodes", "/api/experiments", "/api/rounds?experiment=exp",
    "/api/rounds?experiment=exp&format=csv",
    "/api/rounds/current?experiment=exp", "/api/rounds/current?experiment=exp&wait=0.1&known=1",
    "/api/rounds/1?experiment=exp", "/api/models/0?experiment=exp", "/api/models/latest?experiment=exp",
    "/api/models/0/download?experiment=exp", "/api/models/0/download?experiment=exp&format=json",
    "/api/model/params?experiment=exp", "/api/dashboard?experiment=exp", "/metrics",
]


def _writes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]


@pytest.mark.django_db
@pytest.mark.parametrize("url", GETS)
def test_a_get_writes_nothing(admin_client, experiment, register, uploader, url):
    token = register("1")
    uploader(token, 1, params_for(1))  # something for the round, the node list and the dashboard to show

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)

    assert response.status_code == 200, response.content
    assert _writes(queries) == []


@pytest.mark.django_db
def test_a_nodes_poll_writes_only_its_own_contact_and_not_on_every_poll(api, experiment, register):
    token = register("1")
    Node.objects.filter(node_id="1").update(last_seen=None)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    with CaptureQueriesContext(connection) as first:
        api.get("/api/rounds/current?experiment=exp", **auth)
    with CaptureQueriesContext(connection) as second:
        api.get("/api/rounds/current?experiment=exp", **auth)

    writes = _writes(first)
    node = Node.objects.select_related("experiment").get(node_id="1")
    assert len(writes) == 1 and '"nodes_app_node"' in writes[0] and "last_seen" in writes[0]
    assert node.last_seen is not None and node.experiment.name == "exp"  # the experiment it follows
    assert _writes(second) == []  # within TOUCH_EVERY: a long-polling node is not a stream of writes

