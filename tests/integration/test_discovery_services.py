"""Node rows kept in step with etcd: discovered, lost, resynced, pushed to dashboards; never authenticated."""
import signal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import CommandError, call_command
from django.test import override_settings

from nodes_app.discovery import DiscoveryThread, endpoints_parse
from nodes_app.discovery_services import (
    node_discovered,
    node_discovery_apply,
    node_discovery_sync,
    node_lease_lost,
    server_discovery_jobs,
)
from nodes_app.models import Node
from tests.conftest import params_for
from tests.e2e.conftest import wait_until
from tests.integration.test_discovery_etcd import EtcdServer

pytestmark = pytest.mark.django_db


def _statuses(api) -> dict[str, tuple[str, str]]:
    return {n["node_id"]: (n["status"], n["source"]) for n in api.get("/api/nodes").json()}


def test_node_discovered_creates_a_node_seen_only_in_etcd_that_cannot_upload(api, experiment, uploader):
    node = node_discovered("9", "http://10.0.0.9:8010/")

    assert (node.source, node.address, node.discovery_alive) == ("etcd", "http://10.0.0.9:8010", True)
    assert _statuses(api)["9"] == ("online", "etcd")
    # Discovery is not enrollment: no token, not even the stored hash itself, gets an upload in.
    for guess in (node.token_hash, node.token_hash.removeprefix("!etcd:"), ""):
        response = uploader(guess, 1, params_for(1))
        assert response.status_code == 401
    assert not experiment.rounds.get(number=1).updates.exists()


def test_node_discovered_marks_an_enrolled_node_alive_without_replacing_its_own_address(api, register):
    register("3", "http://127.0.0.1:8004")
    Node.objects.filter(node_id="3").update(discovery_alive=False)

    node = node_discovered("3", "http://198.51.100.7:9999")

    assert (node.source, node.address, node.discovery_alive) == ("api", "http://127.0.0.1:8004", True)


def test_node_lease_lost_turns_the_node_offline_until_it_is_discovered_again(api, register):
    register("3", "http://127.0.0.1:8004")
    node_discovered("3", "http://127.0.0.1:8004")

    node_lease_lost("3")
    offline = _statuses(api)["3"]
    node_discovered("3", "http://127.0.0.1:8004")

    assert offline == ("offline", "api")
    assert _statuses(api)["3"] == ("online", "api")


def test_node_lease_lost_for_an_unknown_node_changes_nothing():
    assert node_lease_lost("ghost") is None
    assert not Node.objects.exists()


@pytest.mark.parametrize(("node_id", "address"), [("5", "javascript:alert(1)"), ("5", "http://u:p@host:1"),
                                                  ("", "http://10.0.0.5:1"), ("x" * 65, "http://10.0.0.5:1")])
def test_node_discovery_apply_skips_invalid_entries_with_a_warning(node_id, address, caplog):
    node_discovery_apply(node_id, address)

    assert not Node.objects.exists()
    assert "ignoring etcd entry" in caplog.text


def test_node_discovery_sync_matches_a_full_listing(register):
    register("1", "http://127.0.0.1:8002")
    register("2", "http://127.0.0.1:8003")
    node_discovered("1", "http://127.0.0.1:8002")
    node_discovered("2", "http://127.0.0.1:8003")
    register("never-in-etcd")

    node_discovery_sync({"2": "http://127.0.0.1:8003", "4": "http://127.0.0.1:8005"})

    alive = dict(Node.objects.values_list("node_id", "discovery_alive"))
    assert alive == {"1": False, "2": True, "4": True, "never-in-etcd": None}


def test_discovery_changes_reach_dashboards_after_the_commit_and_only_on_a_change(
        django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("dashboard", channel)

    with django_capture_on_commit_callbacks(execute=True) as sent:
        node_discovered("9", "http://10.0.0.9:8010")
        node_discovered("9", "http://10.0.0.9:8010")  # nothing changed: no second push
        node_lease_lost("9")
        node_lease_lost("9")
    first, second = async_to_sync(layer.receive)(channel), async_to_sync(layer.receive)(channel)
    async_to_sync(layer.group_discard)("dashboard", channel)

    assert len(sent) == 2
    assert (first["type"], first["event"], first["experiment"]) == ("fl.event", "node.discovered", None)
    assert first["data"]["node_id"] == "9" and first["data"]["status"] == "online"
    assert (second["event"], second["data"]["status"]) == ("node.lost", "offline")


@override_settings(ETCD_ENDPOINTS="")
def test_watchnodes_refuses_to_run_without_etcd_endpoints():
    with pytest.raises(CommandError, match="ETCD_ENDPOINTS is not set"):
        call_command("watchnodes")


@override_settings(ETCD_ENDPOINTS="https://etcd:2379")
def test_watchnodes_rejects_endpoints_it_cannot_use():
    with pytest.raises(CommandError, match="TLS"):
        call_command("watchnodes")


@pytest.mark.django_db(transaction=True)
def test_the_server_side_mirrors_etcd_into_node_rows_and_registers_the_public_url(tmp_path):
    etcd = EtcdServer(tmp_path).start()
    jobs = server_discovery_jobs(endpoints_parse(etcd.endpoint), "http://fedsite.example:5000", 2)
    thread = DiscoveryThread("test-etcd", jobs).start()
    try:
        etcd.ctl("put", "/fedlearn/nodes/7", "http://127.0.0.1:8008")
        wait_until(lambda: Node.objects.filter(node_id="7", discovery_alive=True).exists(), 10, "the node row")
        etcd.ctl("del", "/fedlearn/nodes/7")
        wait_until(lambda: Node.objects.filter(node_id="7", discovery_alive=False).exists(), 10, "the lost node")
        registered = etcd.entries("/fedlearn/server")
        thread.stop()
        after_stop = etcd.entries("/fedlearn/server")
    finally:
        thread.stop()
        etcd.stop(signal.SIGKILL)

    node = Node.objects.get(node_id="7")
    assert (node.source, node.address, node.status) == ("etcd", "http://127.0.0.1:8008", "offline")
    assert registered["/fedlearn/server"][0] == "http://fedsite.example:5000" and registered["/fedlearn/server"][1]
    assert after_stop == {}
