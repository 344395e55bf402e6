"""The dashboard websocket: a snapshot on connect, an event after a commit, nothing before it."""
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from fedsite.asgi import application
from tests.conftest import params_for, upload

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = [(b"origin", b"http://localhost")]


async def _connect() -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=ORIGIN)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_dashboard_sends_a_snapshot_on_connect(make_experiment):
    await database_sync_to_async(make_experiment)(name="default")

    communicator = await _connect()
    message = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert message["event"] == "snapshot"
    assert message["data"]["round"]["number"] == 1 and message["data"]["experiment"]["name"] == "default"


async def test_dashboard_receives_an_upload_only_after_it_commits(make_experiment, register, api):
    await database_sync_to_async(make_experiment)(name="default")
    token = await database_sync_to_async(register)("n1")
    communicator = await _connect()
    await communicator.receive_json_from(timeout=5)

    def upload_in_open_transaction() -> bool:
        with transaction.atomic():
            upload(api, token, 1, params_for(1), experiment="default")
            return True

    await database_sync_to_async(upload_in_open_transaction)()
    event = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert event["event"] == "update.received"
    assert event["data"]["node"] == "n1" and event["data"]["received"] == 1


async def test_dashboard_gets_nothing_from_a_rolled_back_upload(make_experiment, register, api):
    await database_sync_to_async(make_experiment)(name="default")
    token = await database_sync_to_async(register)("n1")
    communicator = await _connect()
    await communicator.receive_json_from(timeout=5)

    def upload_then_roll_back() -> None:
        with transaction.atomic():
            upload(api, token, 1, params_for(1), experiment="default")
            transaction.set_rollback(True)

    await database_sync_to_async(upload_then_roll_back)()
    nothing = await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()

    assert nothing
