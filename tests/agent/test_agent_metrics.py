"""/metrics and /healthz of agents on the real broker: reachable, counting, one registry per agent."""

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.support.agent import close_connection_named, request, wait_for_consumer
from tests.support.metrics import samples, value

pytestmark = pytest.mark.rabbitmq


def get(agent, path):
    """(status, body) of a GET to the agent's listener, error statuses included."""
    url = "http://127.0.0.1:%d%s" % (agent.service.metrics_address[1], path)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def sample(agent, name, **labels):
    return agent.service.metrics.registry.get_sample_value(name, labels) or 0.0


def eventually(agent, name, expected, **labels):
    """Wait for a sample to reach ``expected``: a request ends once the broker confirmed its reply,
    a moment after the requester may have it."""
    deadline = time.monotonic() + 10
    while sample(agent, name, **labels) < expected:
        assert time.monotonic() < deadline, (name, labels, sample(agent, name, **labels))
        time.sleep(0.02)
    return sample(agent, name, **labels)


def test_metrics_and_health_count_what_the_agent_did(start_agent, requester):
    agent = start_agent(metrics_listen="127.0.0.1:0")
    uuid = agent.settings.uuid
    status, body = get(agent, "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "role": "active", "broker": "127.0.0.1:5672",
                                                  "consuming": True}
    for n in range(2):
        requester.send(request("read", n=n), uuid)
    requester.send(b"not json", uuid)
    requester.send(request("read", n="gone"), uuid, headers={"reply_exchange": "amq.topic"})  # refused, not run
    requester.replies(3, timeout=10)
    eventually(agent, "cloudmanagers_agent_requests_total", 1, action="other", outcome="refused")  # not even read
    eventually(agent, "cloudmanagers_agent_requests_total", 2, action="read", outcome="ok")
    _, text = get(agent, "/metrics")
    assert value(text, "cloudmanagers_agent_requests_total", action="read", outcome="ok") == 2
    assert value(text, "cloudmanagers_agent_requests_total", action="other", outcome="error") == 1
    assert value(text, "cloudmanagers_agent_request_duration_seconds_count", action="read") == 2
    assert value(text, "cloudmanagers_agent_broker_info", node="127.0.0.1:5672") == 1
    assert value(text, "cloudmanagers_agent_role", cloudmanagers_agent_role="active") == 1
    assert samples(text)[("cloudmanagers_agent_requests_in_flight", frozenset())] == 0
    assert samples(text)[("cloudmanagers_agent_redeliveries_total", frozenset())] == 0
    assert samples(text)[("cloudmanagers_agent_reconnects_total", frozenset())] == 0


def test_a_lost_connection_counts_a_reconnect_and_the_redelivery(start_agent, requester):
    agent = start_agent(metrics_listen="127.0.0.1:0")
    uuid = agent.settings.uuid
    held = requester.send(request("create", n="held", name="vm-1", hold="go"), uuid)
    eventually(agent, "cloudmanagers_agent_requests_in_flight", 1)
    assert close_connection_named(f"cloudmanagers-agent {uuid}") == 1
    wait_for_consumer(uuid)
    eventually(agent, "cloudmanagers_agent_redeliveries_total", 1)  # the held request, given back
    agent.controller.release("go")
    assert "error" not in requester.replies(1, timeout=10)[held]
    assert agent.controller.executions["held"] == 1  # the redelivery joined the run
    assert sample(agent, "cloudmanagers_agent_reconnects_total") == 1
    assert get(agent, "/healthz")[0] == 200


def test_agents_in_one_process_keep_their_own_counts(start_agent, requester):
    first, second = start_agent(metrics_listen="127.0.0.1:0"), start_agent(metrics_listen="127.0.0.1:0")
    assert first.service.metrics_address != second.service.metrics_address
    requester.send(request("read", n=1), first.settings.uuid)
    requester.replies(1, timeout=10)
    assert eventually(first, "cloudmanagers_agent_requests_total", 1, action="read", outcome="ok") == 1
    assert sample(second, "cloudmanagers_agent_requests_total", action="read", outcome="ok") == 0
