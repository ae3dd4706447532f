"""A group of two real agents on the 3-node cluster, serving the real devcloud (issue 11): a
quorum queue with a single active consumer; the active agent is killed mid-life and the standby
carries on with the VM it created, with no operator action."""

import signal
import time

import pytest

from tests.support.e2e import harness, settle

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


def requests_logged(agent, action):
    return [line for line in agent.tail(10**6).splitlines() if f"action={action} " in line]


def wait_until_consuming(agent, timeout=30.0):
    deadline = time.monotonic() + timeout
    while "consuming from queue" not in agent.tail(10**6):
        assert time.monotonic() < deadline, f"the agent does not consume; its log:\n{agent.tail()}"
        time.sleep(0.1)


def test_the_standby_of_a_group_takes_over_the_devcloud_vm_of_the_killed_active_agent(
        cluster, e2e_config, sections, facts, nova, vm_name, tmp_path):
    active = harness.Agent(str(tmp_path / "a"), e2e_config, hosts=cluster.hosts, queue_type="quorum").start()
    standby = harness.Agent(str(tmp_path / "b"), e2e_config, agent_uuid=active.uuid, hosts=cluster.hosts,
                            queue_type="quorum").start()
    try:
        wait_until_consuming(standby)  # its start-up ping was answered by the active agent
        created = active.call("create", sections["v3"], name=vm_name, flavor="1", image=facts["image_id"], wait=90)
        assert created["status"]["created"] is True, created
        server_id = created["status"]["vm_id"]
        assert requests_logged(active, "create") and not requests_logged(standby, "create")
        active.process.send_signal(signal.SIGKILL)
        active.process.wait(10)
        deleted = standby.call("delete", sections["v3"], name=vm_name, force=True, wait=60)
        assert deleted["status"]["deleted"] is True, deleted
        assert requests_logged(standby, "delete")
        assert settle(nova, server_id)[0] in ("DELETED", None)
    finally:
        standby.stop()
        active.stop()
        cluster.delete_queue(active.uuid)
