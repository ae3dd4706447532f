"""Request age over the real broker: synapse-client's zone-less local stamps from any zone, the
operator's legacy_timestamp_zone, and what carries a zone (the AMQP property, ISO 8601)."""

import os
import subprocess
import sys
import time

import pika
import pytest

from cloudmanagers_plugin.agent.admission import LEGACY_FORMAT, iso_now
from cloudmanagers_plugin.agent.settings import BrokerSettings
from cloudmanagers_plugin.call import RpcClient, build_request
from tests.support.agent import request, unique

pytestmark = pytest.mark.rabbitmq

ZONES = ["Europe/Brussels", "America/New_York", "Asia/Tokyo"]


def client_stamp(zone, seconds_ago=0):
    """The body timestamp synapse-client writes on a host in ``zone``: local time, no zone."""
    code = f"import time; print(time.strftime({LEGACY_FORMAT!r}, time.localtime(time.time() - {seconds_ago})))"
    stamp = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TZ": zone},
                           capture_output=True, text=True, check=True).stdout.strip()
    assert stamp != time.strftime(LEGACY_FORMAT, time.gmtime(time.time() - seconds_ago)), "TZ was not honoured"
    return stamp


@pytest.mark.parametrize("zone", ZONES)
def test_synapse_client_from_any_zone_is_answered(start_agent, requester, zone):
    agent = start_agent(max_request_age=300)
    stamp = client_stamp(zone)
    ping = requester.send({**request("ping", n="ping"), "timestamp": stamp}, agent.settings.uuid)
    read = requester.send({**request(n="read"), "timestamp": stamp}, agent.settings.uuid)
    replies = requester.replies(2)
    assert "error" not in replies[ping] and "error" not in replies[read], replies
    assert agent.controller.executions["ping"] == agent.controller.executions["read"] == 1


@pytest.mark.parametrize("zone", ZONES)
def test_legacy_timestamp_zone_ages_those_stamps(start_agent, requester, zone):
    agent = start_agent(max_request_age=300, legacy_timestamp_zone=zone)
    fresh = requester.send({**request(n="fresh"), "timestamp": client_stamp(zone, 5)}, agent.settings.uuid)
    old = requester.send({**request(n="old"), "timestamp": client_stamp(zone, 600)}, agent.settings.uuid)
    replies = requester.replies(2)
    assert "error" not in replies[fresh]
    assert "s old" in replies[old]["error"] and f"read in {zone}" in replies[old]["error"]
    assert [agent.controller.executions[n] for n in ("fresh", "old")] == [1, 0]


def test_what_carries_a_zone_is_aged(start_agent, requester):
    agent = start_agent(max_request_age=300)
    now = time.time()
    sent = {
        "fresh": requester.send(request(n="fresh"), agent.settings.uuid, timestamp=int(now - 5)),
        "old": requester.send(request(n="old"), agent.settings.uuid, timestamp=int(now - 400)),
        "future": requester.send(request(n="future"), agent.settings.uuid, timestamp=int(now + 3600)),
        "iso fresh": requester.send({**request(n="iso fresh"), "timestamp": iso_now(now)}, agent.settings.uuid),
        "iso old": requester.send({**request(n="iso old"), "timestamp": "2020-01-01T10:00:00+01:00"},
                                  agent.settings.uuid),
        "garbled": requester.send({**request(n="garbled"), "timestamp": "yesterday"}, agent.settings.uuid),
    }
    received = requester.replies(len(sent))
    replies = {name: received[correlation_id] for name, correlation_id in sent.items()}
    assert "error" not in replies["fresh"] and "error" not in replies["iso fresh"]
    assert "s old by its AMQP timestamp property" in replies["old"]["error"]
    assert "in the future" in replies["future"]["error"]
    assert "s old by its timestamp" in replies["iso old"]["error"]
    assert "ISO 8601 with a zone" in replies["garbled"]["error"]
    assert {n for n in sent if agent.controller.executions[n]} == {"fresh", "iso fresh"}


def test_call_sends_a_timestamp_and_an_expiration(broker):
    """`cloudmanagers call` stamps what ages unambiguously, and lets the broker drop a request
    that no agent took before the caller stopped waiting."""
    queue = unique("call-properties")
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, auto_delete=False)
        try:
            client = RpcClient(BrokerSettings(host="127.0.0.1"))
            try:
                client.send(build_request("read", "cm1", {}, None), "", queue, expires_in=7.5)
            finally:
                client.close()
            method, properties, body = channel.basic_get(queue, auto_ack=True)
        finally:
            channel.queue_delete(queue)
    assert method is not None
    assert abs(properties.timestamp - time.time()) < 60
    assert properties.expiration == "7500"
    assert body.decode().count("+00:00") == 1   # the body timestamp carries its zone too
