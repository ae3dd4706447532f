"""Nova's notifications on a TLS bus signed by a private CA, end to end.

A throw-away RabbitMQ node of the test's own (tools/rabbitcluster with one node, ports 26300..
and a TLS listener on 26341, its certificate signed by a CA made here) stands in for the cloud's
bus: never the machine's broker nor the HA tests' cluster. The agent listens there over TLS
verified against ``notifications_cacert``; the test publishes a versioned notification on that
node's ``nova`` exchange, and the agent asks the devcloud's Nova for the VM and reports it. The
same listener without the CA is refused, and says why.
"""

import glob
import logging
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pika
import pytest

from cloudmanagers_plugin.agent.notifications import NotificationService, buses
from cloudmanagers_plugin.config import ConfigFile
from tests.support import ROOT
from tests.support.agent import EventListener, about, temporary_exchange
from tests.support.e2e import harness, settle, wait_for_first_full_list
from tests.support.pki import make_pki
from tests.unit.test_notifications import envelope

SECTION = "devcloud_tls_bus"
PORT_BASE = 26300  # plain AMQP 26301, TLS 26341, Erlang 26311/26320-26329, epmd 26330
TLS_PORT = PORT_BASE + 41
BASE = Path(os.path.expanduser("~/.cache/cloudmanagers-tls-bus"))
NODE = ["--base", str(BASE), "--port-base", str(PORT_BASE), "--prefix", "cmtlsbus", "--nodes", "1"]


def rabbitcluster(*args, check=True):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "rabbitcluster"), *NODE, *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def tls_bus():
    """The node's TLS bus: (URL with a user and password of the test's own, the CA, the password)."""
    if not glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"):
        pytest.skip("rabbitmq-server is not installed (CI installs it)")
    rabbitcluster("stop", check=False)  # a node a killed run left behind
    pki = make_pki(BASE / "pki")
    rabbitcluster("--tls", pki.folder, "start")
    try:
        user, password = f"nova-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        rabbitcluster("ctl", "add_user", user, password)
        rabbitcluster("ctl", "set_permissions", user, ".*", ".*", ".*")
        with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", PORT_BASE + 1)) as connection:
            connection.channel().exchange_declare("nova", "topic", durable=False)
        yield f"rabbits://{user}:{password}@localhost:{TLS_PORT}/", pki.ca, password
    finally:
        rabbitcluster("stop", check=False)


def _publish(body):
    """A notification on the node's ``nova`` exchange, as Nova's messagingv2 driver sends it."""
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", PORT_BASE + 1)) as connection:
        connection.channel().basic_publish("nova", "versioned_notifications.info", body)


def _config(path, facts, bus_url, extra=""):
    demo = facts["credentials"]["demo"]
    path.write_text(f"[{SECTION}]\ncm_type = openstack\nkeystone_base_url = {facts['auth_url']}\n"
                    f"project_name = {demo['project_name']}\nusername = {demo['username']}\n"
                    f"password = {demo['password']}\nnotifications_url = {bus_url}\n{extra}")
    path.chmod(0o600)
    return str(path)


def _wait_log(agent, text, timeout):
    deadline = time.monotonic() + timeout
    while text not in agent.tail(10 ** 6):
        assert time.monotonic() < deadline, f"'{text}' not in the agent's log:\n{agent.tail()}"
        time.sleep(0.1)


@pytest.fixture
def events():
    with temporary_exchange("test-tls-events", "topic") as name:
        queue = EventListener(name, "#")
        yield name, queue
        queue.close()


def test_a_notification_on_a_tls_bus_of_a_private_ca_reaches_the_agent(facts, tls_bus, events, nova,
                                                                       tmp_path_factory):
    """Polling every 300 s: a VM booted after the agent's first list can only come from the notification."""
    url, ca, password = tls_bus
    exchange, queue = events
    config = _config(tmp_path_factory.mktemp("tls") / "cloudmanagers.conf", facts, url, f"notifications_cacert = {ca}\n")
    running = harness.Agent(str(tmp_path_factory.mktemp("agent")), config,
                            events={"exchange": exchange, "poll_interval": 300}).start()
    server_id = None
    try:
        _wait_log(running, f"section '{SECTION}': listening to Nova's notifications on rabbits://", 30)
        wait_for_first_full_list(running, (SECTION,))
        server = nova.servers.create(f"e2e-tls-{uuid.uuid4().hex[:8]}", facts["image_id"],
                                     facts["flavor_ids"]["m1.tiny"], nics="none")
        server_id = server.id
        settle(nova, server_id, "ACTIVE")
        sent = time.monotonic()
        _publish(envelope("instance.create.end", data={"uuid": server_id, "tenant_id": None}))
        _at, event = queue.first(about(running.uuid, SECTION, server_id, vm_status="ACTIVE"), 30, after=sent)
        assert event["status"]["vm_id"] == server_id
        log = running.tail(10 ** 6)
        assert password not in log and f"{urllib.parse.urlsplit(url).username}:***@localhost:{TLS_PORT}" in log
        assert f"(exchange 'nova', TLS verified against {ca})" in log
    finally:
        running.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)
        if server_id:
            nova.servers.delete(server_id)


def test_without_the_private_ca_the_bus_is_refused_and_the_log_says_why(facts, tls_bus, tmp_path, caplog):
    url, _ca, password = tls_bus
    config = ConfigFile(_config(tmp_path / "cloudmanagers.conf", facts, url))  # no CA: the system's
    found = buses(config, [SECTION])
    assert found[SECTION][0].ca_file is None
    service = NotificationService(uuid.uuid4().hex, lambda *_: None, lambda _section: None)
    try:
        with caplog.at_level(logging.WARNING, logger="cloudmanagers_plugin.agent.notifications"):
            service.follow(found)
            deadline = time.monotonic() + 20
            while "notifications are unavailable" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
        assert "the broker's TLS certificate failed verification" in caplog.text
        assert "check notifications_cacert" in caplog.text and password not in caplog.text
        assert not any(listener.consuming for listener in service.listeners)
    finally:
        service.stop()
