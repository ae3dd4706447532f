"""Exactly-once effects across agent processes (issue 11), against the real Nova through RabbitMQ.

An agent is killed with SIGKILL while it runs a request, after its OpenStack call and before
its reply: the broker redelivers the request to the next agent on the queue, whose answer
cache is empty. What that agent must find is on the VM itself, or on the snapshot's image in
Glance. A request run by two agents (the broker gave it to another while the first went on)
leaves one VM, or one image, too.
"""

import configparser
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid

import pika
import pytest

from cloudmanagers_plugin.controller import SNAPSHOT_MARK
from tests.support.e2e import harness, settle
from tests.support.metrics import value
from tests.support.proxy import Proxy

pytestmark = pytest.mark.e2e


class Caller:
    """Publishes requests to one agent's queue and keeps its reply queue while agents come and go."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue

    def send(self, agent_uuid, message, correlation_id):
        properties = pika.BasicProperties(correlation_id=correlation_id, reply_to=self.queue,
                                          headers={"reply_exchange": ""}, user_id="guest", delivery_mode=2)
        self.channel.basic_publish("", agent_uuid, json.dumps(message).encode(), properties)

    def replies(self, correlation_id, timeout, at_least=1):
        """Every reply to ``correlation_id`` within ``timeout`` (returns once ``at_least`` came and 1 s passed)."""
        found, deadline, settle_at = [], time.monotonic() + timeout, None
        while time.monotonic() < (settle_at or deadline):
            _method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if body is None:
                self.connection.process_data_events(time_limit=0.2)
            elif properties.correlation_id == correlation_id:
                found.append(json.loads(body))
                if len(found) >= at_least and settle_at is None:
                    settle_at = time.monotonic() + 1.0
        return found

    def close(self):
        self.connection.close()


@pytest.fixture
def caller():
    client = Caller()
    yield client
    client.close()


@pytest.fixture
def dying_agent(e2e_config, tmp_path):
    """An agent that the test kills mid-request and starts again on the same queue."""
    running = harness.Agent(str(tmp_path / "agent"), e2e_config, metrics_listen="127.0.0.1:0").start()
    yield running
    running.stop()
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)


def text_of(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def kill_and_restart(agent):
    os.kill(agent.process.pid, signal.SIGKILL)  # the request is unacked: the broker redelivers it
    agent.process.wait(10)
    agent.start()


def wait_until(check, timeout=60, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out")


def named(nova, name):
    return nova.servers.list(search_opts={"name": f"^{name}$"})


def test_a_create_redelivered_after_its_post_gives_one_vm_and_the_first_success(
        agent, dying_agent, caller, nova, sections, vm_name):
    cm = sections["v3"]
    correlation_id = str(uuid.uuid4())
    create = {"collection": "cloudmanagers", "action": "create", "id": cm,
              "attributes": {"name": vm_name, "flavor": "m1.tiny", "image": "cirros-fake", "wait": 90}}
    caller.send(dying_agent.uuid, create, correlation_id)
    try:
        (server,) = wait_until(lambda: named(nova, vm_name))  # the POST went through; the agent waits for ACTIVE
        assert server.status == "BUILD"
        kill_and_restart(dying_agent)
        replies = caller.replies(correlation_id, timeout=120)
        assert len(replies) == 1, replies
        status = replies[0]["status"]
        assert status == {"cloudmanager": cm, "created": True, "vm_name": vm_name, "vm_status": "ACTIVE",
                          "vm_id": server.id}, replies[0]
        assert [s.id for s in named(nova, vm_name)] == [server.id]
        assert nova.servers.get(server.id).metadata["cloudmanagers_create_request"] == correlation_id
        assert "created by request" in dying_agent.tail(200)  # the redelivery found the VM
        metrics = text_of(dying_agent.metrics_url())  # the agent that answered counted it
        assert value(metrics, "cloudmanagers_agent_redeliveries_total") == 1
        assert value(metrics, "cloudmanagers_agent_requests_total", action="create", outcome="ok") == 1
        assert value(metrics, "cloudmanagers_openstack_requests_total", cloud_manager=cm, method="GET", code="200") > 0
        assert json.loads(text_of(dying_agent.metrics_url("/healthz")))["role"] == "active"
        another = agent.call("create", cm, name=vm_name, flavor="m1.tiny", image="cirros-fake")
        assert "already exists" in another["error"]  # another request for the name: as before
    finally:
        for leftover in named(nova, vm_name):
            agent.call("delete", cm, name=leftover.id, force=True, wait=60)


def test_a_redelivered_resize_start_does_not_confirm_it(agent, dying_agent, caller, nova, sections, vm_name):
    cm = sections["v3"]
    server_id = agent.call("create", cm, name=vm_name, flavor="m1.tiny", image="cirros-fake", wait=90)["status"]["vm_id"]
    try:
        correlation_id = str(uuid.uuid4())
        resize = {"collection": "cloudmanagers", "action": "update", "id": cm,
                  "attributes": {"name": vm_name, "flavor": "m1.small", "wait": 90}}
        caller.send(dying_agent.uuid, resize, correlation_id)
        wait_until(lambda: nova.servers.get(server_id).status in ("RESIZE", "VERIFY_RESIZE"))
        kill_and_restart(dying_agent)
        replies = caller.replies(correlation_id, timeout=120)
        assert replies and all(r["status"]["vm_actions"] == ["resize"] for r in replies), replies
        assert settle(nova, server_id, "VERIFY_RESIZE") == ("VERIFY_RESIZE", "m1.small")  # not confirmed
        actions = [a.action for a in nova.instance_action.list(server_id)]
        assert actions.count("resize") == 1 and "confirmResize" not in actions, actions
        again = agent.call("update", cm, name=vm_name, flavor="m1.small")  # a new message confirms
        assert again["status"]["vm_actions"] == ["confirm_resize"], again
        assert settle(nova, server_id, "ACTIVE") == ("ACTIVE", "m1.small")
    finally:
        agent.call("delete", cm, name=server_id, force=True, wait=60)


# -- snapshots -------------------------------------------------------------------------------------


@pytest.fixture
def nova_proxy(facts):
    proxy = Proxy(facts["endpoints"]["compute"].split("/v2.1")[0])
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_agent(e2e_config, sections, nova_proxy, tmp_path):
    """An agent whose Nova requests go through ``nova_proxy``, which the test kills and starts again."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(e2e_config)
    config[sections["v3"]]["nova_base_url"] = f"{nova_proxy.url}/v2.1"
    path = tmp_path / "proxied.conf"
    with open(path, "w", encoding="utf-8") as handle:
        config.write(handle)
    os.chmod(path, 0o600)
    running = harness.Agent(str(tmp_path / "proxied"), str(path)).start()
    yield running
    running.stop()
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)


@pytest.fixture
def snapshot_vm(agent, nova, sections, vm_name):
    """A running VM; afterwards the VM and every image of its snapshots are deleted."""
    server_id = agent.call("create", sections["v3"], name=vm_name, flavor="m1.tiny", image="cirros-fake",
                           wait=90)["status"]["vm_id"]
    yield server_id
    settle(nova, server_id)
    for image in glance_images(nova, name=f"{vm_name}-snap"):
        nova.client.session.delete(f"/v2/images/{image['id']}", endpoint_filter={"service_type": "image"})
    agent.call("delete", sections["v3"], name=server_id, force=True, wait=60)


def glance_images(nova, **query):
    """Images as Glance itself lists them, read independently of the plugin."""
    path = "/v2/images?" + "&".join(f"{key}={value}" for key, value in query.items())
    return nova.client.session.get(path, endpoint_filter={"service_type": "image"}).json()["images"]


def snapshot_message(cm, vm_name):
    return {"collection": "cloudmanagers", "action": "update", "id": cm,
            "attributes": {"name": vm_name, "snapshot": f"{vm_name}-snap", "wait": 90}}


def snapshots_taken(nova, server_id):
    return [a.action for a in nova.instance_action.list(server_id)].count("createImage")


def test_a_snapshot_redelivered_after_its_createimage_gives_one_image_and_its_id(
        proxied_agent, nova_proxy, caller, nova, sections, vm_name, snapshot_vm):
    """The agent dies once Nova took the snapshot and before the agent even learned the image's id
    (the proxy holds Nova's answer back): the redelivery finds the image by its request's id."""
    cm = sections["v3"]
    correlation_id = str(uuid.uuid4())
    nova_proxy.hold_next(lambda method, path, body: method == "POST" and b"createImage" in body)
    caller.send(proxied_agent.uuid, snapshot_message(cm, vm_name), correlation_id)
    assert nova_proxy.held.wait(60), proxied_agent.tail()
    (image,) = wait_until(lambda: glance_images(nova, **{SNAPSHOT_MARK: correlation_id}))
    kill_and_restart(proxied_agent)
    replies = caller.replies(correlation_id, timeout=120)
    assert len(replies) == 1, replies
    assert replies[0]["status"] == {"cloudmanager": cm, "vm_name": vm_name, "vm_id": snapshot_vm,
                                    "image_id": image["id"], "image_status": "active", "vm_status": "ACTIVE",
                                    "vm_actions": ["snapshot"]}, replies[0]
    assert [i["id"] for i in glance_images(nova, **{SNAPSHOT_MARK: correlation_id})] == [image["id"]]
    assert snapshots_taken(nova, snapshot_vm) == 1
    assert "taken by request" in proxied_agent.tail(200)  # the redelivery looked, and took none


@pytest.mark.parametrize("together", [True, False], ids=["at-once", "one-after-the-other"])
def test_one_snapshot_request_run_by_two_agents_leaves_one_image_named_in_both_replies(
        agent, dying_agent, caller, nova, sections, vm_name, snapshot_vm, together):
    """The broker gave the request to a second agent while the first went on (the first lost its
    node, not its process): neither is marked redelivered. At once, Nova refuses the second
    snapshot (409, one at a time) and that run answers the other's image; one after the other,
    the second snapshot is taken, and its run finds the older image, deletes its own and answers
    the older."""
    cm = sections["v3"]
    correlation_id = str(uuid.uuid4())
    caller.send(agent.uuid, snapshot_message(cm, vm_name), correlation_id)
    first = [] if together else caller.replies(correlation_id, timeout=120)
    caller.send(dying_agent.uuid, snapshot_message(cm, vm_name), correlation_id)
    replies = first + caller.replies(correlation_id, timeout=120, at_least=2 - len(first))
    assert len(replies) == 2, replies
    images = glance_images(nova, **{SNAPSHOT_MARK: correlation_id})
    assert len(images) == 1, images
    assert {r["status"]["image_id"] for r in replies} == {images[0]["id"]}, replies
    assert all(r["status"]["image_status"] == "active" for r in replies), replies
    if not together:
        assert snapshots_taken(nova, snapshot_vm) == 2  # the second was taken, and its image deleted
