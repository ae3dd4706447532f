"""Reply routing (legacy section 3.4) and the agent's own error replies, over the real broker."""

import json
import time

import pika
import pytest

from tests.support.agent import request, unique

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def side_queue(broker):
    """A direct exchange with a queue bound under a routing key: (exchange, key, read())."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    channel = connection.channel()
    exchange, key = unique("agent-test-direct"), unique("rk")
    channel.exchange_declare(exchange, "direct", auto_delete=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange, key)

    def read(timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method:
                return properties, json.loads(body)
            time.sleep(0.02)
        return None

    yield exchange, key, read
    connection.close()


def test_reply_goes_to_default_exchange_and_reply_to(start_agent, requester):
    agent = start_agent()
    corr = requester.send(request(n=1), agent.settings.uuid)
    (_method, properties, body), = requester.collect(1)
    reply = json.loads(body)
    assert properties.correlation_id == corr
    assert properties.user_id == "guest"
    assert properties.content_type == "application/json"
    assert reply["status"] == {"action": "read", "n": 1} and reply["msg_type"] == "response"


def test_broadcast_on_the_bound_exchange_reaches_the_agent(start_agent, requester, exchange):
    start_agent()
    requester.send(request(n=2), "", exchange=exchange)
    assert len(requester.collect(1)) == 1


def test_reply_exchange_header_names_the_exchange(start_agent, requester, side_queue):
    exchange, key, read = side_queue
    agent = start_agent(reply_exchanges=exchange)
    corr = requester.send(request(), agent.settings.uuid, headers={"reply_exchange": exchange}, reply_to=key)
    properties, reply = read()
    assert properties.correlation_id == corr and "error" not in reply


def test_without_header_the_publish_exchange_is_used(start_agent, requester, side_queue):
    exchange, key, read = side_queue
    agent = start_agent(publish_exchange=exchange)
    requester.send(request(), agent.settings.uuid, headers=None, reply_to=key)
    assert read() is not None


def test_without_reply_to_the_publish_routing_key_is_used(start_agent, requester, side_queue):
    exchange, key, read = side_queue
    agent = start_agent(publish_exchange=exchange, publish_routing_key=key)
    corr = requester.send(request(), agent.settings.uuid, headers=None, reply=False)
    properties, _reply = read()
    assert properties.correlation_id == corr


def test_no_reply_address_still_runs_and_is_acked(start_agent, requester):
    agent = start_agent()  # publish_exchange "" and publish_routing_key "": no fallback address
    requester.send(request(n="silent"), agent.settings.uuid, headers=None, reply=False)
    deadline = time.monotonic() + 5
    while not agent.controller.executions["silent"] and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.stop()
    assert agent.controller.executions["silent"] == 1
    declared = requester.channel.queue_declare(agent.settings.uuid, passive=True)
    assert declared.method.message_count == 0  # acked, not returned to the queue


def test_missing_reply_exchange_does_not_hurt_the_agent(start_agent, requester):
    agent = start_agent()
    requester.send(request(n="lost"), agent.settings.uuid, headers={"reply_exchange": unique("no-such")})
    corr = requester.send(request(n="next"), agent.settings.uuid)
    replies = requester.replies(1)
    assert corr in replies and "error" not in replies[corr]
    assert agent.thread.is_alive()


@pytest.mark.parametrize("body, error", [
    (b"{not json", "not valid JSON"),
    (b'"a string"', "JSON object"),
    (json.dumps({"action": "read"}).encode(), "'collection' is missing"),
    (json.dumps({"collection": "cloudmanagers"}).encode(), "'action' is missing"),
    (json.dumps({"collection": "cloudmanagers", "action": "read", "attributes": None}).encode(), "'attributes'"),
    (json.dumps({"collection": "cloudmanagers", "action": "read", "monitor": 1}).encode(), "'monitor'"),
    (json.dumps({"collection": "cloudmanagers", "action": "read", "filters": [1]}).encode(), "'filters'"),
    (json.dumps({"collection": "files", "action": "read", "id": "x"}).encode(), "The resource [files] does not exist"),
], ids=["json", "not-object", "no-collection", "no-action", "null-attributes", "monitor-type", "filters-type",
        "unknown-collection"])
def test_invalid_requests_get_an_error_reply(start_agent, requester, body, error):
    agent = start_agent()
    corr = requester.send(body, agent.settings.uuid)
    reply = requester.replies(1)[corr]
    assert error in reply["error"]
    assert reply["status"] == {} and reply["uuid"] == agent.settings.uuid and reply["msg_type"] == "response"
    assert sum(agent.controller.executions.values()) == 0
