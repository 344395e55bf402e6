"""The dashboard websocket: a snapshot on connect, an event after a commit, nothing before it, and the login gate."""
import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from fedsite.asgi import application
from tests.conftest import params_for, upload

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost")


async def _connect(path: str = "/ws/dashboard/", cookie: str = "") -> WebsocketCommunicator:
    headers = [ORIGIN, (b"cookie", cookie.encode())] if cookie else [ORIGIN]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


def _session_cookie() -> str:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("operator", password="not-used-here")
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def test_dashboard_sends_a_snapshot_on_connect(make_experiment):
    await database_sync_to_async(make_experiment)(name="default")

    communicator = await _connect()
    message = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert message["event"] == "snapshot"
    data = message["data"]
    assert data["round"]["number"] == 1 and data["experiment"]["name"] == "default"
    assert data["model"]["version"] == 0 and data["model"]["summary"]["count"] == 769
    assert set(data["thresholds"]) == {"stale_s", "offline_s"}


async def test_dashboard_snapshot_follows_the_experiment_in_the_query_string(make_experiment):
    await database_sync_to_async(make_experiment)(name="default")
    await database_sync_to_async(make_experiment)(name="other", total_nodes=5)

    communicator = await _connect("/ws/dashboard/?experiment=other")
    message = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert message["data"]["experiment"]["name"] == "other" and message["data"]["experiment"]["total_nodes"] == 5


async def test_dashboard_says_so_when_the_experiment_does_not_exist():
    communicator = await _connect("/ws/dashboard/?experiment=nope")
    message = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert message["event"] == "error"
    assert message["data"]["error"] == "unknown_experiment" and "'nope'" in message["data"]["detail"]


async def test_dashboard_receives_an_upload_only_after_it_commits(make_experiment, register, api):
    await database_sync_to_async(make_experiment)(name="default")
    token = await database_sync_to_async(register)("n1")
    communicator = await _connect()
    await communicator.receive_json_from(timeout=5)
    stored = threading.Event()
    release = threading.Event()

    def upload_and_hold_the_transaction() -> int:
        with transaction.atomic():
            status = upload(api, token, 1, params_for(1), experiment="default", metrics={"loss": 0.25}).status_code
            stored.set()
            release.wait(10)
        return status

    holding = asyncio.ensure_future(database_sync_to_async(upload_and_hold_the_transaction)())
    assert await asyncio.to_thread(stored.wait, 10)
    nothing_before_commit = await communicator.receive_nothing(timeout=0.5)
    release.set()
    status = await holding
    event = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert status == 201
    assert nothing_before_commit
    assert event["event"] == "update.received" and event["experiment"] == "default"
    assert event["data"]["node"] == "n1" and event["data"]["received"] == 1 and event["data"]["round"] == 1
    assert event["data"]["metrics"] == {"loss": 0.25} and event["data"]["delta_norm"] > 0


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


async def test_dashboard_socket_is_refused_without_a_login_when_one_is_required(make_experiment, settings):
    settings.FL_DASHBOARD_LOGIN_REQUIRED = True
    await database_sync_to_async(make_experiment)(name="default")

    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=[ORIGIN])
    connected, _ = await communicator.connect()
    await communicator.disconnect()

    assert not connected


async def test_dashboard_socket_serves_a_logged_in_user_when_a_login_is_required(make_experiment, settings):
    settings.FL_DASHBOARD_LOGIN_REQUIRED = True
    await database_sync_to_async(make_experiment)(name="default")
    cookie = await database_sync_to_async(_session_cookie)()

    communicator = await _connect(cookie=cookie)
    message = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()

    assert message["event"] == "snapshot" and message["data"]["experiment"]["name"] == "default"
