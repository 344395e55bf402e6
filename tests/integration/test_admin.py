"""The admin lists every model and never dumps parameter blobs or token hashes."""
import pytest

from aggregation.models import ModelVersion, Round, Update
from nodes_app.models import Node
from tests.conftest import params_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["experiment", "round", "update", "modelversion"])
def test_admin_changelists_and_change_pages_render(admin_client, experiment, register, uploader, path):
    uploader(register("a"), 1, params_for(1))
    objects = {"experiment": experiment, "round": Round.objects.first(), "update": Update.objects.first(),
               "modelversion": ModelVersion.objects.first()}

    listing = admin_client.get(f"/admin/aggregation/{path}/?q=a")
    detail = admin_client.get(f"/admin/aggregation/{path}/{objects[path].pk}/change/")

    assert listing.status_code == 200 and detail.status_code == 200
    assert b'name="parameters"' not in detail.content


def test_admin_node_page_hides_the_token_hash(admin_client, register):
    register("a")
    node = Node.objects.get()

    detail = admin_client.get(f"/admin/nodes_app/node/{node.pk}/change/")

    assert detail.status_code == 200
    assert node.token_hash.encode() not in detail.content
