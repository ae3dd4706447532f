"""Agents on a real 3-node RabbitMQ cluster (tools/rabbitcluster): several broker nodes with
failover, the quorum queue and its delivery limit, and agent groups (single active consumer
and competing consumers), with nodes and agents killed for real."""

import json
import time
import uuid as uuidlib

import pytest

from cloudmanagers_plugin.cli import main
from tests.support.agent import AgentThread, FakeController, Requester, agent_settings, request
from tests.support.cluster import AgentProcess

pytestmark = pytest.mark.cluster

NOBODY = "127.0.0.1:26199"  # a port of this project's block where nothing listens


@pytest.fixture
def queue(cluster):
    """A fresh agent uuid (its queue is deleted afterwards)."""
    name = str(uuidlib.uuid4())
    yield name
    cluster.delete_queue(name)


@pytest.fixture
def agents(cluster, queue):
    """``agents(count, *options)`` -> agent processes of one group on every node; killed at the end."""
    started = []

    def start(count, *options):
        group = []
        for _ in range(count):
            agent = AgentProcess(queue, cluster.hosts, *options)
            agent.wait_for("consuming from queue")  # one after the other: the first is the active one
            group.append(agent)
        started.extend(group)
        return group

    yield start
    for agent in started:
        agent.stop()


def ask(requester, queue, timeout=20.0, **attributes):
    """Send one request to the group's queue; its reply (or None after ``timeout``).

    Only that request's reply counts: an agent killed after publishing a reply but before its
    ack has the broker redeliver that request, and the next agent answers it again.
    """
    correlation_id = requester.send(request("update", name="vm", whoami=True, **attributes), queue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _method, properties, body in requester.received:
            if properties.correlation_id == correlation_id:
                return json.loads(body)
        requester.connection.process_data_events(time_limit=0.05)
    return None


def test_the_agent_takes_the_first_node_that_answers_and_moves_on_when_it_dies(cluster, queue):
    first, second, third = cluster.nodes()
    settings = agent_settings(uuid=queue, exchange="", queue_type="quorum")
    settings.broker.host = f"{NOBODY},{second.address},{third.address},{first.address}"
    agent = AgentThread(settings, FakeController(agent_uuid=queue), broker=third.parameters())
    requester = Requester(third.parameters())
    try:
        status = agent.service.status
        assert (status.broker_node, status.reconnects, status.role) == (second.address, 0, "standby")
        assert ask(requester, queue)["status"]["n"] is None and status.role == "active"
        cluster.kill(second)
        reply = ask(requester, queue, n=2)
        assert reply is not None and reply["status"]["n"] == 2, "no answer after the agent's node died"
        assert (status.broker_node, status.reconnects) == (third.address, 1)
    finally:
        requester.close()
        agent.stop()


def test_the_quorum_queue_is_declared_with_the_delivery_limit(cluster, queue):
    settings = agent_settings(uuid=queue, exchange="", queue_type="quorum", delivery_limit=3, consumers="competing")
    settings.broker.host = cluster.hosts
    agent = AgentThread(settings, FakeController(agent_uuid=queue), broker=cluster.nodes()[0].parameters())
    try:
        [line] = [line for line in cluster.ctl("list_queues", "-q", "name", "type", "arguments").splitlines()
                  if line.startswith(queue)]
        assert "quorum" in line and '{"x-delivery-limit",3}' in line.replace(" ", "")
        assert "x-single-active-consumer" not in line
    finally:
        agent.stop()


def test_a_request_that_kills_every_agent_taking_it_is_abandoned_and_the_group_keeps_serving(cluster, queue, agents):
    group = agents(3, "--queue-type", "quorum", "--delivery-limit", "2")
    requester = Requester(cluster.nodes()[0].parameters())
    try:
        correlation_id = requester.send(request("update", name="vm", die=True), queue)
        reply = requester.replies(1, 30).get(correlation_id)
        assert reply is not None, "the poison request got no answer"
        assert reply["error"].startswith("request abandoned after 2 deliveries") and reply["status"] == {}
        deadline = time.monotonic() + 5  # a killed process may still be exiting when its socket closed
        while sum(agent.process.poll() is not None for agent in group) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [agent for agent in group if agent.process.poll() is None]
        assert len(survivors) == 1, "\n".join(line for agent in group for line in agent.lines[-15:])
        [survivor] = survivors
        survivor.wait_for("abandoned after 2 deliveries")
        assert ask(requester, queue, n=7)["status"] == {"action": "update", "n": 7, "pid": survivor.pid}
    finally:
        requester.close()


def test_single_active_consumer_the_standby_answers_once_the_active_agent_is_killed(cluster, queue, agents):
    active, standby = agents(2, "--queue-type", "quorum")
    requester = Requester(cluster.nodes()[0].parameters())
    try:
        assert ask(requester, queue)["status"]["pid"] == active.pid
        active.wait_for("ROLE active")
        assert standby.role == "standby"
        active.kill()
        killed = time.monotonic()
        reply = ask(requester, queue, n=2)
        assert reply["status"]["pid"] == standby.pid and time.monotonic() - killed < 10
        standby.wait_for("ROLE active")
    finally:
        requester.close()


def test_competing_consumers_all_get_work(cluster, queue, agents):
    group = agents(2, "--consumers", "competing")
    cluster.wait_for_consumers(queue, 2)
    requester = Requester(cluster.nodes()[0].parameters())
    try:
        sent = [requester.send(request("read", name=f"vm{n}", n=n, whoami=True, sleep=0.2), queue) for n in range(8)]
        replies = requester.replies(len(sent), 20)
        assert set(replies) == set(sent)
        assert {reply["status"]["pid"] for reply in replies.values()} == {agent.pid for agent in group}
        for agent in group:
            agent.wait_for("ROLE active")
    finally:
        requester.close()



def test_call_takes_the_first_node_that_answers(cluster, queue, agents, capsys):
    agents(1, "--consumers", "competing")
    second = cluster.nodes()[1]
    code = main(["call", "read", "cm1", "--name", "web", "--attr", "n=7", "--target", queue, "--timeout", "10",
                 "--url", f"amqp://guest:guest@{NOBODY}/", "--url", f"amqp://guest:guest@{second.address}/"])
    assert code == 0 and "n             7" in capsys.readouterr().out
