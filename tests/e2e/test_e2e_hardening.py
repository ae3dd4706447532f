"""Effects that must not repeat (issue 15), against the real Nova through RabbitMQ and the agent."""

import json
import os
import signal
import subprocess
import time
import uuid

import pika
import pytest

from tests.support.e2e import harness, settle

pytestmark = pytest.mark.e2e


def send_raw(agent_uuid, message, correlation_id, timeout=120):
    """Publish ``message`` to one agent with a chosen correlation id, as a redelivery carries it; return the reply."""
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        properties = pika.BasicProperties(correlation_id=correlation_id, reply_to=queue,
                                          headers={"reply_exchange": ""}, user_id="guest", delivery_mode=2)
        channel.basic_publish("", agent_uuid, json.dumps(message).encode(), properties)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _method, props, body = channel.basic_get(queue, auto_ack=True)
            if body is not None and props.correlation_id == correlation_id:
                return json.loads(body)
            connection.process_data_events(time_limit=0.2)
    raise AssertionError(f"no reply within {timeout} s")


def test_a_redelivered_reboot_does_not_reboot_again(agent, nova, sections, e2e_config, tmp_path, vm_name):
    """The agent is killed after a reboot and the request comes again: the VM is rebooted once."""
    cm = sections["v3"]
    created = agent.call("create", cm, name=vm_name, flavor="m1.tiny", image="cirros-fake", wait=90)
    server_id = created["status"]["vm_id"]
    rebooting = harness.Agent(str(tmp_path / "agent"), e2e_config).start()
    try:
        reboot = {"collection": "cloudmanagers", "action": "update", "id": cm,
                  "attributes": {"name": vm_name, "status": "REBOOT", "wait": 60}}
        correlation_id = str(uuid.uuid4())
        first = send_raw(rebooting.uuid, reboot, correlation_id)
        assert first["status"]["vm_actions"] == ["reboot_soft"], first
        os.kill(rebooting.process.pid, signal.SIGKILL)  # its answer cache dies with it
        rebooting.process.wait(10)
        rebooting.start()
        again = send_raw(rebooting.uuid, reboot, correlation_id)  # what the broker redelivers
        assert "error" not in again and again["status"]["vm_status"] == "ACTIVE", again
        reboots = [action for action in nova.instance_action.list(server_id) if action.action == "reboot"]
        assert len(reboots) == 1, [a.action for a in nova.instance_action.list(server_id)]
        assert nova.servers.get(server_id).metadata["cloudmanagers_reboot_request"] == correlation_id
        send_raw(rebooting.uuid, reboot, str(uuid.uuid4()))  # another request reboots again
        settle(nova, server_id, "ACTIVE")
        assert len([a for a in nova.instance_action.list(server_id) if a.action == "reboot"]) == 2
    finally:
        rebooting.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", rebooting.uuid], capture_output=True)
        harness.cloudmanagers("call", "delete", cm, "--name", server_id, "--attr", "force=true",
                              "--target", agent.uuid, "--timeout", "60")
