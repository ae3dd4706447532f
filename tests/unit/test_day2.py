"""Day-2 actions on update: shelve/unshelve, snapshot, metadata, tags, rename; console log on read."""

import pytest

from cloudmanagers_plugin import states
from tests.support.controller import status_of


@pytest.mark.parametrize("current", ["ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED"])
def test_shelve_from_every_allowed_state(call, cloud, current):
    server = cloud.add_server("vm", status=current)
    status = status_of(call("update", name="vm", status="SHELVED", wait=5))
    assert status["vm_actions"] == ["shelve"] and status["vm_status"] == "SHELVED_OFFLOADED"
    assert cloud.servers[server["id"]]["status"] == "SHELVED_OFFLOADED"


@pytest.mark.parametrize("current", ["SHELVED", "SHELVED_OFFLOADED"])
def test_unshelve_back_to_active(call, cloud, current):
    server = cloud.add_server("vm", status=current)
    status = status_of(call("update", name="vm", status="unshelve", wait=5))
    assert status["vm_actions"] == ["unshelve"] and status["vm_status"] == "ACTIVE"
    assert cloud.servers[server["id"]]["status"] == "ACTIVE"


@pytest.mark.parametrize("word", ["shelve", "shelved", "SHELVED", "shelved_offloaded"])
def test_already_shelved_costs_no_call(call, cloud, word):
    cloud.add_server("vm", status="SHELVED_OFFLOADED")
    assert status_of(call("update", name="vm", status=word))["vm_actions"] == []
    assert not [r for r in cloud.requests() if "/action" in r]


def test_shelve_is_one_row_of_the_table():
    row = states.normalise("shelve")
    assert row.target == "SHELVED" and row.final_statuses == ("SHELVED", "SHELVED_OFFLOADED")
    assert states.plan("SHELVED_OFFLOADED", "ACTIVE") == "unshelve"
    with pytest.raises(Exception, match="cannot go from ERROR to SHELVED"):
        states.plan("ERROR", "shelve")


def test_snapshot_with_wait_answers_once_active(call, cloud):
    cloud.add_server("vm")
    status = status_of(call("update", name="vm", snapshot="vm-backup", wait=5))
    assert status["vm_actions"] == ["snapshot"] and status["image_status"] == "active"
    image = next(i for i in cloud.images if i["id"] == status["image_id"])
    assert image["name"] == "vm-backup"


def test_snapshot_without_wait_reports_the_current_status(call, cloud):
    cloud.snapshot_status = "queued"
    cloud.add_server("vm")
    status = status_of(call("update", name="vm", snapshot="vm-backup"))
    assert status["image_status"] == "queued" and status["image_id"]


def test_snapshot_that_fails_is_an_error(call, cloud):
    cloud.snapshot_status = "killed"
    cloud.add_server("vm")
    assert "went to killed" in call("update", name="vm", snapshot="vm-backup", wait=5)["error"]


def test_snapshot_wait_that_runs_out(call, cloud):
    cloud.snapshot_status = "saving"
    cloud.add_server("vm")
    assert "is still saving after 0.5 s; expected active" in call("update", name="vm", snapshot="b", wait=0.5)["error"]


def test_metadata_set_and_remove(call, cloud):
    server = cloud.add_server("vm", metadata={"old": "1", "keep": "2"})
    status = status_of(call("update", name="vm", metadata={"role": "db", "old": None, "absent": None}))
    assert status["vm_actions"] == ["set_metadata", "delete_metadata"]
    assert cloud.servers[server["id"]]["metadata"] == {"keep": "2", "role": "db"}
    assert len([r for r in cloud.requests() if "/metadata/" in r]) == 1  # only keys that exist


def test_tags_replace_and_clear(call, cloud):
    server = cloud.add_server("vm", tags=["a"])
    assert status_of(call("update", name="vm", tags=["b", "c"]))["vm_actions"] == ["set_tags"]
    assert cloud.servers[server["id"]]["tags"] == ["b", "c"]
    assert status_of(call("update", name="vm", tags=["c", "b"]))["vm_actions"] == []  # same set: no call
    assert status_of(call("update", name="vm", tags=[]))["vm_actions"] == ["set_tags"]
    assert cloud.servers[server["id"]]["tags"] == []


def test_rename(call, cloud):
    server = cloud.add_server("old-name")
    status = status_of(call("update", name="old-name", rename="new-name"))
    assert status["vm_actions"] == ["rename"] and status["vm_name"] == "new-name"
    assert cloud.servers[server["id"]]["name"] == "new-name"
    assert status_of(call("read", name="new-name"))["vm_id"] == server["id"]


def test_rename_refused_when_the_name_is_taken(call, cloud):
    cloud.add_server("a")
    cloud.add_server("b")
    error = call("update", name="a", rename="b", metadata={"x": "1"})["error"]
    assert "a VM named 'b' already exists" in error
    assert all(s["metadata"] == {} for s in cloud.servers.values())  # nothing ran


def test_several_actions_in_one_update(call, cloud):
    cloud.add_server("vm")
    status = status_of(call("update", name="vm", tags=["x"], status="SHUTOFF", snapshot="img", wait=5))
    assert status["vm_actions"] == ["set_tags", "stop", "snapshot"] and status["vm_status"] == "SHUTOFF"


@pytest.mark.parametrize("attributes,words", [
    ({"metadata": "a=b"}, "'metadata' must be an object of strings (null removes a key), got a string"),
    ({"metadata": {"a": 1}}, "not a string: a"),
    ({"tags": "a"}, "'tags' must be a list of strings"),
    ({"rename": ""}, "update needs 'status' and/or 'flavor'"),
    ({"snapshot": 5.5}, "'snapshot' must be a string"),
])
def test_bad_day2_attributes(call, cloud, attributes, words):
    cloud.add_server("vm")
    assert words in call("update", name="vm", **attributes)["error"]
    assert not [r for r in cloud.requests() if not r.startswith("GET") and "auth" not in r]


def test_console_log_last_lines(call, cloud):
    cloud.add_server("vm")
    status = status_of(call("read", name="vm", consolelog=3))
    assert status["vm_console_log"] == "boot line 18\nboot line 19\nboot line 20\n"
    assert status["vm_name"] == "vm" and "vm_status" in status
    assert "vm_console_log" not in status_of(call("read", name="vm"))


@pytest.mark.parametrize("value,words", [(0, "between 1 and 10000"), ("x", "whole number"), (True, "whole number"),
                                         (10001, "between 1 and 10000")])
def test_console_log_bad_count(call, cloud, value, words):
    cloud.add_server("vm")
    assert words in call("read", name="vm", consolelog=value)["error"]
