"""The notification listener on a real RabbitMQ: its own queue, hints within the window, outages.

A private topic exchange stands in for Nova's ``nova`` exchange; the messages are shaped as
Nova's messagingv2 driver sends them (tests/unit/test_notifications.py builds them).
"""

import logging
import threading
import time

import pika
import pytest

from cloudmanagers_plugin.agent import notifications
from cloudmanagers_plugin.agent.notifications import NotificationService
from cloudmanagers_plugin.transport_url import parse
from tests.support.agent import close_connection_named, connections_named, temporary_exchange, unique
from tests.unit.test_notifications import PROJECT, VM, envelope

pytestmark = pytest.mark.rabbitmq
URL = "rabbit://guest:guest@127.0.0.1:5672/"


class Reads:
    """The feed's ``refresh_vm`` as the listener sees it: it records, with the time."""

    def __init__(self):
        self.calls = []
        self.arrived = threading.Condition()

    def __call__(self, section, vm_id):
        with self.arrived:
            self.calls.append((time.monotonic(), section, vm_id))
            self.arrived.notify_all()

    def wait(self, count, timeout=10.0):
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.calls) >= count, timeout), self.calls
        return self.calls


@pytest.fixture
def nova_exchange(broker):
    name = unique("test-nova")
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_declare(name, "topic", auto_delete=False)
    yield name
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_delete(name)


def publish(exchange, bodies, routing_key="versioned_notifications.info"):
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        channel = connection.channel()
        for body in bodies:
            channel.basic_publish(exchange, routing_key, body)


def wait_consuming(service, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (service.listeners and all(listener.consuming for listener in service.listeners)):
        assert time.monotonic() < deadline, "the listener never consumed"
        time.sleep(0.02)


@pytest.fixture
def start_service():
    services = []

    def start(exchange, url=URL, reads=None):
        agent = unique("agent")
        service = NotificationService(agent, reads or Reads(), lambda _section: PROJECT)
        services.append(service)
        service.follow({"cloud": (parse(url, "test"), exchange)})
        return service, f"cloudmanagers-agent {agent} notifications cloud"

    yield start
    for service in services:
        service.stop()


def test_a_burst_of_notifications_gives_one_read_within_the_window(nova_exchange, start_service):
    reads = Reads()
    service, _name = start_service(nova_exchange, reads=reads)
    wait_consuming(service)
    sent = time.monotonic()
    publish(nova_exchange, [envelope("instance.resize.start")] + [envelope("instance.update")] * 10
            + [envelope("service.update"), envelope("instance.update", data={"tenant_id": "someone-else"})])
    (at, section, vm_id), = reads.wait(1)
    time.sleep(notifications.COALESCE_SECONDS * 3)
    assert len(reads.calls) == 1 and (section, vm_id) == ("cloud", VM)
    assert at - sent < 1.0
    publish(nova_exchange, [envelope("instance.power_off.end")], routing_key="versioned_notifications.error")
    reads.wait(2)


def test_the_shared_info_queue_is_never_read(nova_exchange, start_service):
    """Nova's own versioned_notifications.info queue keeps its messages for the cloud's consumers."""
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        channel = connection.channel()
        shared = unique("versioned_notifications.info")
        channel.queue_declare(shared, auto_delete=True)
        channel.queue_bind(shared, nova_exchange, "versioned_notifications.info")
        reads = Reads()
        service, _name = start_service(nova_exchange, reads=reads)
        wait_consuming(service)
        publish(nova_exchange, [envelope()])
        reads.wait(1)
        assert channel.queue_declare(shared, passive=True).method.message_count == 1


def test_a_lost_connection_is_one_warning_then_hints_flow_again(nova_exchange, start_service, caplog):
    caplog.set_level(logging.INFO, logger="cloudmanagers_plugin.agent.notifications")
    reads = Reads()
    service, name = start_service(nova_exchange, reads=reads)
    wait_consuming(service)
    assert close_connection_named(name) == 1
    deadline = time.monotonic() + 15
    while not ("listening again" in caplog.text and service.listeners[0].consuming):
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    publish(nova_exchange, [envelope()])
    reads.wait(1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "polling carries on" in warnings[0].getMessage()
    assert "guest:***@127.0.0.1:5672" in warnings[0].getMessage() and ":guest@" not in caplog.text


def test_a_missing_exchange_or_a_dead_bus_is_retried_with_back_off(broker, start_service, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="cloudmanagers_plugin.agent.notifications")
    monkeypatch.setattr(notifications, "RETRY_CAP_SECONDS", 0.5)
    missing = unique("test-nova-later")
    reads = Reads()
    service, _name = start_service(missing, reads=reads)
    deadline = time.monotonic() + 10
    while "does not exist" not in caplog.text and "NOT_FOUND" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_declare(missing, "topic", auto_delete=True)
        wait_consuming(service, timeout=15)
        publish(missing, [envelope()])
        reads.wait(1)
    dead, _ = start_service("nova", url="rabbit://guest:secret-pw@127.0.0.1:1/")
    deadline = time.monotonic() + 10
    while "connection refused" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    assert "secret-pw" not in caplog.text
    assert not dead.listeners[0].consuming


def test_a_refused_login_names_the_bus_url_not_the_agents_broker(nova_exchange, start_service, caplog):
    """The bus's account is the notifications_url's, not [rabbitmq]'s: the warning must say which to fix."""
    caplog.set_level(logging.WARNING, logger="cloudmanagers_plugin.agent.notifications")
    service, _name = start_service(nova_exchange, url="rabbit://guest:not-the-password@127.0.0.1:5672/")
    deadline = time.monotonic() + 10
    while "refused the login" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    assert "check notifications_url's username and password" in caplog.text
    assert "[rabbitmq]" not in caplog.text and "not-the-password" not in caplog.text
    assert not service.listeners[0].consuming


def test_stop_ends_a_listener_still_connecting(broker):
    """A bus that accepts the TCP connection but never answers must not hold up the agent's stop."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        service = NotificationService("agent", Reads(), lambda _s: None)
        service.follow({"cloud": (parse(f"rabbit://u:p@127.0.0.1:{silent.getsockname()[1]}/", "test"), "nova")})
        time.sleep(0.3)
        started = time.monotonic()
        service.stop()
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def queue_exists(name):
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        try:
            connection.channel().queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
    return True


def test_a_section_that_comes_goes_and_changes_bus_leaves_no_connection_queue_or_thread(
        nova_exchange, broker, caplog):
    caplog.set_level(logging.INFO, logger="cloudmanagers_plugin.agent.notifications")
    agent, reads = unique("agent"), Reads()
    name, queue = f"cloudmanagers-agent {agent} notifications cloud", f"cloudmanagers-agent.{agent}.cloud"
    before = set(threading.enumerate())
    service = NotificationService(agent, reads, lambda _section: PROJECT)
    bus = (parse("rabbit://guest:guest@127.0.0.1:5672/", "test"), nova_exchange)
    try:
        for _ in range(3):
            service.follow({"cloud": bus})
            wait_consuming(service)
            service.follow({})
            deadline = time.monotonic() + 10
            while service.listeners or connections_named(name) or queue_exists(queue):
                assert time.monotonic() < deadline, "the listener's connection or queue stayed"
                time.sleep(0.1)
        with temporary_exchange("test-nova-moved", "topic") as moved:
            service.follow({"cloud": bus})
            wait_consuming(service)
            service.follow({"cloud": (bus[0], moved)})  # the exchange changed: a new listener, the same queue name
            deadline = time.monotonic() + 10
            while not (service.listeners and service.listeners[0].bus[1] == moved and service.listeners[0].consuming):
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
            publish(nova_exchange, [envelope()])
            publish(moved, [envelope()])
            (_at, section, vm_id), = reads.wait(1)
            time.sleep(notifications.COALESCE_SECONDS * 3)
            assert len(reads.calls) == 1 and (section, vm_id) == ("cloud", VM) and len(connections_named(name)) == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == notifications.LOG.name]
        assert set(threading.enumerate()) - before == {service._thread}
    finally:
        service.stop()
    assert set(threading.enumerate()) - before == set() and not connections_named(name)
