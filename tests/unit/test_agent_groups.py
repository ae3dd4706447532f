"""Broker clusters, quorum queues and agent groups without a broker: the host list, several
--url, the queue arguments, the abandoned answer at the delivery limit, and the role."""

import json
import logging

import pytest
from pika import BasicProperties

from cloudmanagers_plugin.agent.admission import Gate, HostFilter
from cloudmanagers_plugin.agent.broker import connection_parameters, explain_connection_failure
from cloudmanagers_plugin.agent.execution import AnswerCache, Dispatcher, cached_weight, delivery_count
from cloudmanagers_plugin.agent.settings import (
    AgentSettings, BrokerSettings, apply_url, load_settings, parse_hosts, queue_arguments,
)
from cloudmanagers_plugin.agent.status import AgentStatus
from cloudmanagers_plugin.agent.transport import Delivery
from cloudmanagers_plugin.errors import ConfigError
from tests.support.agent import FakeController
from tests.unit.test_agent_path import HeldPool, Replies
from tests.unit.test_agent_settings import write

# -- several broker nodes -------------------------------------------------------------------------


def test_hosts_are_comma_separated_each_with_an_optional_port():
    assert parse_hosts("a, b:5673 ,c", 5672) == [("a", 5672), ("b", 5673), ("c", 5672)]
    assert parse_hosts("[::1]:5674,[fe80::1]", 5671) == [("::1", 5674), ("fe80::1", 5671)]
    assert parse_hosts("localhost", 5672) == [("localhost", 5672)]


@pytest.mark.parametrize("text, message", [
    ("a,,b", "an empty host"), ("a:x", "'a:x' is not host or host:port"), ("a:70000", "not host or host:port"),
    (":5672", "not host or host:port"), ("::1", "in brackets"),
])
def test_a_bad_host_list_is_refused_naming_the_entry(text, message):
    with pytest.raises(ValueError, match=message):
        parse_hosts(text, 5672)


def test_the_host_list_comes_from_the_file_and_is_checked_at_load(tmp_path):
    settings = load_settings(write(tmp_path, "[rabbitmq]\nhost = r1, r2:5673\nport = 5600\n"))
    assert settings.broker.endpoints == [("r1", 5600), ("r2", 5673)]
    assert settings.broker.describe() == "amqp://guest@r1:5600,r2:5673/%2F"
    with pytest.raises(ConfigError, match=r"\[rabbitmq\] host: 'r2:no' is not host or host:port"):
        load_settings(write(tmp_path, "[rabbitmq]\nhost = r1, r2:no\n"))


def test_tls_nodes_use_ssl_port_and_each_node_its_own_host_name():
    broker = BrokerSettings(host="r1,r2:6000", use_ssl=False)
    assert [(p.host, p.port) for p in connection_parameters(broker, "n")] == [("r1", 5672), ("r2", 6000)]
    assert BrokerSettings(host="r1,r2", use_ssl=True).endpoints == [("r1", 5671), ("r2", 5671)]


def test_repeated_urls_name_the_nodes_of_one_cluster():
    broker = AgentSettings().broker
    apply_url(broker, "amqp://bob:pw@r1:5601/prod", "amqp://bob:pw@r2/prod", "amqp://bob:pw@[::1]:5603/prod")
    assert broker.endpoints == [("r1", 5601), ("r2", 5672), ("::1", 5603)]
    assert (broker.username, broker.password, broker.vhost) == ("bob", "pw", "prod")
    assert "pw" not in broker.describe()


def test_repeated_urls_must_share_scheme_user_and_vhost():
    with pytest.raises(ConfigError, match="same scheme, user, password and vhost"):
        apply_url(AgentSettings().broker, "amqp://bob:pw@r1/prod", "amqp://eve:pw@r2/prod")


def test_a_failure_names_the_node_that_failed():
    broker = BrokerSettings(host="r1,r2:5999")
    failure = explain_connection_failure(ConnectionRefusedError(111, "refused"), broker, ("r2", 5999))
    assert "port 5999" in failure.reason and not failure.permanent


# -- queue type, delivery limit, consumers --------------------------------------------------------


def settings_with(**values):
    settings = AgentSettings()
    for key, value in values.items():
        setattr(settings, key, value)
    return settings


def test_a_classic_queue_keeps_the_arguments_earlier_versions_declared():
    assert queue_arguments(AgentSettings()) == {}
    assert queue_arguments(settings_with(queue_expires=60)) == {"x-expires": 60000}


def test_a_quorum_queue_has_its_delivery_limit_and_a_single_active_consumer_by_default():
    assert queue_arguments(settings_with(queue_type="quorum")) == {
        "x-queue-type": "quorum", "x-delivery-limit": 5, "x-single-active-consumer": True}
    assert queue_arguments(settings_with(queue_type="quorum", delivery_limit=2, consumers="competing")) == {
        "x-queue-type": "quorum", "x-delivery-limit": 2}
    assert queue_arguments(settings_with(consumers="single-active")) == {"x-single-active-consumer": True}


@pytest.mark.parametrize("text, message", [
    ("queue_type = stream", "queue_type must be classic or quorum"),
    ("consumers = all", "consumers must be single-active or competing"),
    ("delivery_limit = 0", r"out of range: \[agent\] delivery_limit"),
])
def test_bad_group_settings_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, f"[agent]\n{text}\n"))


# -- the abandoned answer -------------------------------------------------------------------------


def dispatcher_with(limit):
    controller, pool, replies, abandoned = FakeController(), HeldPool(), Replies(), []
    subject = Dispatcher(Gate("agent", "cloudmanagers", HostFilter("agent"), None, 0), controller, pool,
                         AnswerCache(16, 1 << 20, cached_weight), lambda callback: callback(), 1 << 20, replies,
                         limit, lambda: abandoned.append(1))
    return subject, controller, pool, replies, abandoned


def deliver(subject, tag, deliveries=None):
    body = json.dumps({"collection": "cloudmanagers", "action": "update", "id": "cm",
                       "attributes": {"n": tag, "name": "vm"}}).encode()
    headers = {"x-delivery-count": deliveries} if deliveries is not None else None
    delivery = Delivery(None, tag, BasicProperties(correlation_id=f"c{tag}", user_id="guest", headers=headers), body)
    subject.handle(delivery)
    return delivery


def test_a_request_at_its_delivery_limit_is_answered_abandoned_and_not_run():
    subject, controller, pool, replies, abandoned = dispatcher_with(5)
    delivery = deliver(subject, 1, deliveries=5)
    pool.run_all()
    [(tag, body, duplicate)] = replies.sent
    reply = json.loads(body)
    assert tag == 1 and not duplicate and not controller.executions and abandoned == [1]
    assert reply["error"].startswith("request abandoned after 5 deliveries") and reply["status"] == {}
    assert (reply["resource_id"], reply["collection"], reply["uuid"]) == ("cm", "cloudmanagers", "agent")
    assert delivery.summary.action == "update" and delivery.summary.vm == "vm"
    assert delivery.answer is None or delivery.answer.level == logging.ERROR


def test_a_request_below_its_limit_runs_and_without_a_limit_the_header_is_ignored():
    subject, controller, pool, replies, abandoned = dispatcher_with(5)
    deliver(subject, 1, deliveries=4)
    deliver(subject, 2)
    pool.run_all()
    assert controller.executions == {1: 1, 2: 1} and not abandoned
    subject, controller, pool, replies, abandoned = dispatcher_with(0)  # a classic queue
    deliver(subject, 3, deliveries=9)
    pool.run_all()
    assert controller.executions == {3: 1}


def test_the_delivery_count_header_is_read_only_when_it_is_an_integer():
    assert delivery_count(BasicProperties(headers={"x-delivery-count": 3})) == 3
    assert delivery_count(BasicProperties(headers={"x-delivery-count": "3"})) == 0
    assert delivery_count(BasicProperties(headers={"x-delivery-count": True})) == 0
    assert delivery_count(BasicProperties()) == 0


# -- the role -------------------------------------------------------------------------------------


def test_single_active_is_standby_until_its_first_delivery_then_active_until_disconnected():
    status, roles = AgentStatus(single_active=True), []
    status.on_role_change(roles.append)
    status.connected("r1:5672")
    status.consuming()
    assert (status.role, status.broker_node, status.reconnects) == ("standby", "r1:5672", 0)
    status.delivered(redelivered=True)
    status.delivered(redelivered=False)
    assert (status.role, status.redeliveries) == ("active", 1)
    status.disconnected()
    status.connected("r2:5672")
    status.consuming()
    assert (status.broker_node, status.reconnects, roles) == ("r2:5672", 1, ["standby", "active", "disconnected",
                                                                           "standby"])


def test_competing_consumers_are_active_from_consume_ok():
    status = AgentStatus(single_active=False)
    status.consuming()
    assert status.role == "active"
