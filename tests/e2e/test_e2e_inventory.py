"""Issue 10's inventory reads through RabbitMQ, the agent and the devcloud: every VM with its details
keys in one reply, and what changed since a time (a VM stopped and deleted outside the agent)."""

from datetime import datetime, timedelta, timezone

import pytest

from tests.support.controller import status_of
from tests.support.e2e import settle

pytestmark = pytest.mark.e2e

MOVING = {"vm_console_url", "vm_vnc_port", "vm_console_unavailable"}  # a list knows a console, never fetches it


def _entry(status, vm_id):
    return next(entry for entry in status["vm_details"] if entry["vm_id"] == vm_id)


def test_details_and_changes_since_see_changes_made_outside_the_agent(agent, sections, nova, vm_name):
    cm = sections["v3"]
    created = status_of(agent.call("create", cm, name=vm_name, flavor="m1.tiny", image="cirros-fake", wait=90))
    vm_id = created["vm_id"]
    try:
        alone = status_of(agent.call("read", cm, name=vm_name))
        listed = status_of(agent.call("read", cm, details="true"))
        assert {"id": vm_id, "name": vm_name, "status": "ACTIVE"} in listed["servers"]
        assert len(listed["vm_details"]) == len(listed["servers"]) == len(listed["VMs"])
        entry = _entry(listed, vm_id)
        assert {k: v for k, v in entry.items() if k not in MOVING} == \
            {k: v for k, v in alone.items() if k not in MOVING}

        before = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        nova.servers.stop(vm_id)  # outside the agent
        assert settle(nova, vm_id, "SHUTOFF")[0] == "SHUTOFF"
        changed = status_of(agent.call("read", cm, changes_since=before))
        assert changed["changes_since"] == before
        assert _entry(changed, vm_id)["vm_status"] == "SHUTOFF"

        nova.servers.delete(vm_id)
        assert settle(nova, vm_id, "DELETED")[0] == "DELETED"
        gone = status_of(agent.call("read", cm, changes_since=before))
        assert {"id": vm_id, "name": vm_name, "status": "DELETED"} in gone["servers"]
        assert _entry(gone, vm_id)["vm_status"] == "DELETED"
        assert vm_id not in [s["id"] for s in status_of(agent.call("read", cm, details="true"))["servers"]]
    finally:
        agent.call("delete", cm, name=vm_id, force=True, wait=60)


def test_changes_since_rejects_a_time_that_is_not_iso_8601(agent, sections):
    reply = agent.call("read", sections["v3"], changes_since="last tuesday")
    assert "must be an ISO 8601 date and time" in reply["error"]
