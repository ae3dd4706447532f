"""The agent's defences through the real RabbitMQ (issue 15): what a fake channel cannot show."""

import json
import logging
from collections import Counter

import pytest

from tests.support.agent import request, unique

pytestmark = pytest.mark.rabbitmq


def test_the_real_reply_is_persistent(start_agent, requester):
    """Defect 1: the reply as the broker delivers it has delivery_mode 2."""
    agent = start_agent()
    corr = requester.send(request(n="persist"), agent.settings.uuid)
    requester.replies(1)
    (properties,) = [props for _m, props, _b in requester.received if props.correlation_id == corr]
    assert properties.delivery_mode == 2


def test_a_missing_reply_exchange_neither_closes_the_reply_channel_nor_duplicates(start_agent, requester, caplog):
    """Defect 2: an allowed but missing exchange costs only the replies addressed to it."""
    missing = unique("agent-test-missing")
    agent = start_agent(reply_exchanges=missing)
    good = []
    with caplog.at_level(logging.INFO):
        for number in range(60):
            if number % 3 == 1:
                requester.send(request(n=number), agent.settings.uuid, headers={"reply_exchange": missing})
            else:
                good.append(requester.send(request(n=number), agent.settings.uuid))
        replies = requester.replies(len(good), timeout=20)
        requester.collect(len(good) + 5, timeout=1)  # time for any duplicate to arrive
        agent.stop()  # drained: every log line is written
    assert set(replies) == set(good)
    counts = Counter(props.correlation_id for _m, props, _b in requester.received)
    assert set(counts.values()) == {1}, counts.most_common(3)
    assert "reply channel closed" not in caplog.text
    assert f"reply exchange '{missing}' cannot be used" in caplog.text


def test_a_reply_exchange_outside_the_allow_list_is_refused_and_not_run(start_agent, requester, exchange, caplog):
    """Defect 3: amq.topic, or the agent's own fanout, never receive a reply; the request does not run."""
    agent = start_agent()
    with caplog.at_level(logging.INFO):
        for target in ("amq.topic", exchange):
            requester.send(request(n=target), agent.settings.uuid, headers={"reply_exchange": target})
        corr = requester.send(request(n="fine"), agent.settings.uuid)
        assert corr in requester.replies(1)
        agent.stop()  # drained: every log line is written
    assert agent.controller.executions == Counter({"fine": 1})
    assert caplog.text.count("is not allowed (see [agent] reply_exchanges)") == 2
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("action=")]
    assert len(lines) == 3  # nothing came back into the agent as a request


def test_an_oversized_body_gets_a_clear_error(start_agent, requester):
    """Defect 5: a body over [agent] max_message_bytes is refused with a reply saying so."""
    agent = start_agent(max_message_bytes=100_000)
    corr = requester.send(request(n="big", pad="x" * 200_000), agent.settings.uuid)
    reply = requester.replies(1)[corr]
    assert "max_message_bytes" in reply["error"] and len(json.dumps(reply)) < 1000
    assert not agent.controller.executions


def test_a_huge_id_is_echoed_as_a_short_marked_prefix(start_agent, requester):
    """Defect 5: a 500 kB id does not come back whole."""
    agent = start_agent()
    corr = requester.send(request(cm="c" * 500_000, n="echo"), agent.settings.uuid)
    reply = requester.replies(1)[corr]
    assert reply["resource_id"].startswith("ccc") and "500000 characters" in reply["resource_id"]
    assert len(json.dumps(reply)) < 2000


def test_a_newline_in_a_request_forges_no_log_line(start_agent, requester, caplog):
    """Defect 10: id, action, name and correlation id are logged with their control characters escaped."""
    agent = start_agent()
    forged = "x\nINFO cloudmanagers_plugin.agent: action=delete cm=prod outcome='ok'"
    with caplog.at_level(logging.INFO):
        corr = requester.send(
            {"collection": "cloudmanagers", "action": forged, "id": forged, "attributes": {"name": forged, "n": 1}},
            agent.settings.uuid, correlation_id="c\n" + unique("forged"),
        )
        requester.replies(1)
        agent.stop()  # drained: every log line is written
    (line,) = [r.getMessage() for r in caplog.records if corr[2:] in r.getMessage()]
    assert "\n" not in line and line.count("INFO cloudmanagers_plugin.agent: action=delete") == 3


def test_with_permissions_a_request_without_user_id_is_denied(start_agent, requester, tmp_path):
    """Defect 4: through the broker, leaving out user_id passes for no user."""
    path = tmp_path / "permissions.conf"
    path.write_text("mallory cloudmanagers * R\n* cloudmanagers * CRUD\n")
    agent = start_agent(permissions=str(path))
    anonymous = requester.send(request("update", n="anon", name="vm"), agent.settings.uuid, user_id=None)
    named = requester.send(request("update", n="guest", name="vm"), agent.settings.uuid)
    replies = requester.replies(2)
    assert "anonymous request" in replies[anonymous]["error"] and "error" not in replies[named]
    assert agent.controller.executions == Counter({"guest": 1})

