"""Inventory reads (issue 10): every VM with its details keys in one reply, and what changed since a time."""

import pytest
import requests_mock

from cloudmanagers_plugin.render import reply_text
from tests.support.controller import status_of
from tests.support.fakecloud import FakeCloud

DETAIL_KEYS = {"cloudmanager", "url", "vm_name", "vm_id", "vm_status", "vm_task_state", "vm_vcpus", "vm_flavor",
               "vm_flavor_name", "vm_vnc_port", "vm_console_url", "vm_addresses", "vm_image", "vm_key_name",
               "vm_availability_zone", "vm_metadata", "vm_tags", "vm_created", "vm_updated"}


def test_details_gives_every_vm_the_keys_of_a_vm_details_read(call, cloud):
    cloud.add_server("web"), cloud.add_server("db", status="SHUTOFF")
    web_alone = status_of(call("read", name="web"))
    status = status_of(call("read", details=True))
    assert [d["vm_name"] for d in status["vm_details"]] == ["web", "db"]
    for entry in status["vm_details"]:
        assert DETAIL_KEYS <= set(entry)
    listed_web = status["vm_details"][0]
    assert {k: v for k, v in listed_web.items() if "console" not in k and k != "vm_vnc_port"} == \
        {k: v for k, v in web_alone.items() if "console" not in k and k != "vm_vnc_port"}
    assert listed_web["vm_console_url"] == web_alone["vm_console_url"]  # the console the read fetched, known
    assert status["vm_details"][1]["vm_console_unavailable"] == "the VM is SHUTOFF"


def test_details_makes_one_nova_request_per_page_and_none_per_vm(controller):
    with requests_mock.Mocker() as mocker:
        cloud = FakeCloud(mocker, page_size=2)
        for index in range(5):
            cloud.add_server(f"vm{index}")
        controller.driver("test_os").authenticate()
        before = len(cloud.requests())
        reply = controller.process({"collection": "cloudmanagers", "action": "read", "id": "test_os",
                                    "attributes": {"details": True}, "filters": {}})
        made = cloud.requests()[before:]
    assert [d["vm_name"] for d in reply["status"]["vm_details"]] == [f"vm{i}" for i in range(5)]
    servers = [r for r in made if "/servers" in r]
    assert len(servers) == 3 and all("/servers/detail" in r for r in servers)  # pages of 2, 2, 1
    assert not any("remote-consoles" in r or "/servers/vm" in r for r in made)
    assert reply["status"]["vm_details"][0]["vm_console_url"] is None  # never read: no request for it
    assert "read the VM by name" in reply["status"]["vm_details"][0]["vm_console_unavailable"]


def test_changes_since_lists_changed_and_deleted_vms(call, cloud):
    old = cloud.add_server("old", updated="2026-11-25T09:00:00Z")
    cloud.add_server("new", updated="2026-11-25T11:00:00Z")
    gone = cloud.add_server("gone", updated="2026-11-25T09:00:00Z")
    assert "error" not in call("delete", name="gone", force=True)
    status = status_of(call("read", changes_since="2026-11-25T10:00:00Z"))
    assert status["changes_since"] == "2026-11-25T10:00:00Z"
    assert status["VMs"] == ["new", "gone"]
    assert status["servers"][1] == {"id": gone["id"], "name": "gone", "status": "DELETED"}
    assert status["vm_details"][1]["vm_status"] == "DELETED"
    assert old["id"] not in [s["id"] for s in status["servers"]]


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00Z", 5, "", ["2026-11-25T10:00:00Z"]])
def test_changes_since_must_be_an_iso_time(call, cloud, bad):
    error = call("read", changes_since=bad)["error"]
    assert "attribute 'changes_since' must be an ISO 8601 date and time" in error


def test_changes_since_with_a_name_is_an_error(call, cloud):
    cloud.add_server("web")
    assert "send it without 'name'" in call("read", name="web", changes_since="2026-11-25T10:00:00Z")["error"]


def test_the_vm_table_is_unchanged_by_the_details_list(call, cloud):
    cloud.add_server("web")
    text = reply_text(call("read", details=True))
    assert "vm_details" not in text and "web" in text and "ACTIVE" in text
