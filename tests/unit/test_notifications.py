"""Nova's versioned notifications: the envelope, the bus URL, the coalescing of bursts, the filter."""

import json
import logging
import os
import threading
import time

import pytest

from cloudmanagers_plugin.agent import notifications
from cloudmanagers_plugin.agent.events import ChangeFeed
from cloudmanagers_plugin.agent.notifications import Coalescer, NotificationService, parse_notification
from cloudmanagers_plugin.changes import TrackerStore
from cloudmanagers_plugin.config import ConfigFile
from cloudmanagers_plugin.errors import ConfigError
from cloudmanagers_plugin.transport_url import mask, parse
from tests.support.controller import LEGACY_SECTION, write_config

VM = "dcdad6c8-f589-471a-89b4-c0af9a16fe46"
PROJECT = "7118bbd628b9425b813112c3cd235db4"


def envelope(event_type="instance.power_off.end", data=None, wrapped=True):
    """A notification as Nova's messagingv2 driver puts it on the bus (the shape captured from the devcloud)."""
    message = {
        "_context_auth_token": "gAAAA-a-user-token", "_unique_id": "f0e1", "message_id": "a1b2",
        "event_type": event_type, "priority": "INFO", "publisher_id": "nova-compute:dc10",
        "timestamp": "2026-11-26 01:20:00.000000",
        "payload": {"nova_object.name": "InstanceActionPayload", "nova_object.namespace": "nova",
                    "nova_object.version": "1.9",
                    "nova_object.data": {"uuid": VM, "tenant_id": PROJECT, "state": "stopped", "task_state": None,
                                         **(data or {})}},
    }
    if not wrapped:
        return json.dumps(message).encode()
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


def test_an_instance_notification_names_its_vm_and_project():
    assert parse_notification(envelope()) == ("instance.power_off.end", VM, PROJECT)
    assert parse_notification(envelope("instance.update", wrapped=False)) == ("instance.update", VM, PROJECT)


@pytest.mark.parametrize("body", [
    envelope("service.update"), envelope("flavor.create"),
    envelope(data={"uuid": None}), envelope(data={"uuid": ""}),
    b"not json", b"[1, 2]", json.dumps({"oslo.message": "{broken"}).encode(), "é".encode("latin-1"),
    json.dumps({"oslo.message": json.dumps({"event_type": "instance.update", "payload": "text"})}).encode(),
], ids=["service", "flavor", "null-uuid", "empty-uuid", "not-json", "list", "broken-inner", "not-utf8",
        "payload-not-object"])
def test_anything_else_is_no_hint(body):
    assert parse_notification(body) is None


class Timers:
    """``later`` that keeps the callbacks until the test fires them."""

    def __init__(self):
        self.due = []

    def later(self, delay, callback):
        self.due.append((delay, callback))

    def fire(self):
        due, self.due = self.due, []
        for _delay, callback in due:
            callback()
        return len(due)


def test_a_burst_of_hints_gives_one_read_per_window():
    timers, reads = Timers(), []
    coalescer = Coalescer(0.15, timers.later, reads.append)
    for _ in range(12):  # a resize emits about that many
        coalescer.hint("vm")
    coalescer.hint("other")
    assert [delay for delay, _ in timers.due] == [0.15, 0.15]
    assert timers.fire() == 2
    assert reads == ["vm", "other"] and coalescer.pending == 0 and not timers.due


def test_a_hint_during_a_read_gives_one_more_read_after_it():
    """The read may have missed what the hint announced: the last state is always read."""
    timers, reads = Timers(), []

    def read(key):
        reads.append(key)
        if len(reads) == 1:
            coalescer.hint(key)  # the VM changes again while it is being read
            coalescer.hint(key)

    coalescer = Coalescer(0.15, timers.later, read)
    coalescer.hint("vm")
    timers.fire()
    assert reads == ["vm"] and len(timers.due) == 1
    timers.fire()
    assert reads == ["vm", "vm"] and coalescer.pending == 0 and not timers.due


def test_a_failing_read_does_not_wedge_the_vm():
    timers, calls = Timers(), []

    def read(key):
        calls.append(key)
        raise RuntimeError("boom")

    coalescer = Coalescer(0.15, timers.later, read)
    coalescer.hint("vm")
    timers.fire()
    coalescer.hint("vm")
    timers.fire()
    assert calls == ["vm", "vm"] and coalescer.pending == 0


def test_vms_of_other_projects_cost_no_read():
    refreshed = []
    service = NotificationService("agent", lambda s, v: refreshed.append((s, v)), lambda section: PROJECT, window=0)
    service._learn_projects(["cloud"])
    timers = Timers()
    service._coalescer = Coalescer(0, timers.later, service._read)
    service._hint("cloud", ("instance.update", VM, "another-project"))
    service._hint("cloud", ("instance.update", VM, PROJECT))
    timers.fire()
    assert refreshed == [("cloud", VM)]


# -- the bus URL -----------------------------------------------------------------------------


def test_the_bus_url_and_its_masked_form():
    url = parse("rabbit://nova:s3cr%40t@rabbit1:5672,nova:s3cr%40t@rabbit2/openstack", "key")
    assert [(b.host, b.port, b.username, b.password) for b in url.brokers] == [
        ("rabbit1", 5672, "nova", "s3cr@t"), ("rabbit2", 5672, "nova", "s3cr@t")]
    assert url.vhost == "openstack" and not url.use_ssl
    assert url.masked == "rabbit://nova:***@rabbit1:5672,nova:***@rabbit2:5672/openstack"
    assert "s3cr" not in repr(url)
    assert parse("amqp://u:p@h/", "key").vhost == "/"
    assert parse("rabbit://u:p@h:5671/v?ssl=1", "key").use_ssl
    assert parse("rabbits://u:p@h/v", "key").brokers[0].port == 5671


@pytest.mark.parametrize("url", ["http://u:secret@h/v", "rabbit://u:secret@:5672/v", "rabbit://u:secret@h:port/v",
                                 "u:secret@h"])
def test_a_bad_bus_url_is_a_clear_error_without_the_password(url):
    with pytest.raises(ConfigError) as caught:
        parse(url, "section [x]: key 'notifications_url'")
    assert "secret" not in str(caught.value) and "notifications_url" in str(caught.value)
    assert "secret" not in mask(url)


def test_a_section_names_its_bus_and_may_remediate(tmp_path):
    path = write_config(tmp_path / "cloudmanagers.conf", LEGACY_SECTION + (
        "notifications_url = rabbit://nova:pw@bus:5672/openstack\nnotifications_exchange = openstack\n"
        "remediate = yes\n"))
    section = ConfigFile(path).get("test_os")
    assert section.notifications_url.masked == "rabbit://nova:***@bus:5672/openstack"
    assert section.notifications_exchange == "openstack" and section.remediate is True
    assert "pw@" not in repr(section)
    plain = ConfigFile(write_config(tmp_path / "plain.conf", LEGACY_SECTION)).get("test_os")
    assert plain.notifications_url is None and plain.notifications_exchange == "nova" and plain.remediate is False


def test_a_bad_bus_url_makes_only_its_section_invalid(tmp_path):
    path = write_config(tmp_path / "cloudmanagers.conf", LEGACY_SECTION + "notifications_url = ftp://u:pw@bus/\n")
    with pytest.raises(ConfigError, match="notifications_url") as caught:
        ConfigFile(path).get("test_os")
    assert "pw" not in str(caught.value)


# -- the listeners follow the cloud managers file ------------------------------------------------

BUS = "rabbit://nova:s3cret-pw@bus1:5672/openstack"
OTHER = LEGACY_SECTION.replace("[test_os]", "[other]")


class FakeListener:
    """A NotificationListener without a bus: what the service made, started and stopped. Its
    connection closes at once when stopped, unless the test holds it open (``hold_open``)."""

    made = []
    hold_open = False

    def __init__(self, section, url, exchange, queue, ioloop, connection_name, on_hint):
        self.section, self.bus, self.queue, self.connection_name = section, (url, exchange), queue, connection_name
        self.started = self.stopped = self.open = False
        FakeListener.made.append(self)

    def start(self):
        self.started = self.open = True

    def stop(self):
        self.stopped = True
        self.open = self.open and FakeListener.hold_open

    @property
    def closed(self):
        return not self.open


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def running(section=None):
    """The fake listeners started and not stopped (of ``section``)."""
    return [listener for listener in FakeListener.made
            if listener.started and not listener.stopped and section in (None, listener.section)]


@pytest.fixture
def following(controller, conf_path, tmp_path, monkeypatch):
    """A change feed polling the fake cloud every 20 ms and the notification service it drives,
    with fake listeners; ``write(text)`` rewrites the cloud managers file."""
    monkeypatch.setattr(notifications, "NotificationListener", FakeListener)
    monkeypatch.setattr(FakeListener, "made", [])
    feed = ChangeFeed(controller, "cloudmanagers", TrackerStore(str(tmp_path / "state")), "agent-1",
                      ("events.x", "cm.rk"), None, 0.02, 3600)
    service = notifications.notification_service("agent-1", controller, feed)

    def write(text):  # at once, as an editor saves: the feed never reads half a file
        write_config(tmp_path / "next.conf", text)
        os.replace(tmp_path / "next.conf", conf_path)

    feed.start()
    yield feed, service, write
    service.stop()
    feed.close()


def ticks(feed, count=5):
    """Let the feed read the file ``count`` more times."""
    time.sleep(feed.poll_interval * count)


def test_listeners_follow_the_sections_as_the_polling_does(cloud, following, caplog):
    caplog.set_level(logging.INFO, logger="cloudmanagers_plugin.agent.notifications")
    feed, service, write = following
    wait_until(lambda: feed.sections == ["test_os"])
    ticks(feed)
    assert FakeListener.made == [] and service.listeners == []  # no bus: polling alone
    write(LEGACY_SECTION + f"notifications_url = {BUS}\n")  # a bus added to a section
    wait_until(lambda: running("test_os"))
    first, = FakeListener.made
    assert (first.bus[0].masked, first.bus[1]) == ("rabbit://nova:***@bus1:5672/openstack", "nova")
    assert first.queue == "cloudmanagers-agent.agent-1.test_os"
    assert first.connection_name == "cloudmanagers-agent agent-1 notifications test_os"
    write(LEGACY_SECTION + f"notifications_url = {BUS}\n" + OTHER + f"notifications_url = {BUS}\n")  # a new section
    wait_until(lambda: running("other"))
    write(LEGACY_SECTION + f"notifications_url = {BUS.replace('bus1', 'bus2')}\n"  # a bus moved, an exchange changed
          + OTHER + f"notifications_url = {BUS}\nnotifications_exchange = openstack\n")
    wait_until(lambda: first.stopped and len(FakeListener.made) == 4 and len(running()) == 2)
    assert sorted((l.section, l.bus[0].brokers[0].host, l.bus[1]) for l in running()) == [
        ("other", "bus1", "openstack"), ("test_os", "bus2", "nova")]
    write(LEGACY_SECTION + f"notifications_url = {BUS.replace('bus1', 'bus2')}\n")  # a section removed
    wait_until(lambda: not running("other"))
    write(LEGACY_SECTION)  # a bus removed
    wait_until(lambda: not running())
    ticks(feed)
    assert len(FakeListener.made) == 4 and all(listener.stopped for listener in FakeListener.made)
    assert service.listeners == []
    stopped = [r.getMessage() for r in caplog.records if "no longer listening" in r.getMessage()]
    assert len(stopped) == 4 and "rabbit://nova:***@bus1:5672/openstack" in stopped[0]
    assert "s3cret-pw" not in caplog.text


def test_each_section_has_one_listener_whatever_the_number_of_readings(cloud, following):
    feed, service, write = following
    write(LEGACY_SECTION + f"notifications_url = {BUS}\n" + OTHER + f"notifications_url = {BUS}\n")
    wait_until(lambda: len(running()) == 2)
    ticks(feed, 10)
    assert len(FakeListener.made) == 2 and sorted(l.section for l in service.listeners) == ["other", "test_os"]


def test_an_unreadable_file_keeps_the_listeners_with_one_warning(cloud, following, caplog):
    feed, service, write = following
    write(LEGACY_SECTION + f"notifications_url = {BUS}\n")
    wait_until(lambda: running("test_os"))
    write("this is [not an INI file\n")
    ticks(feed, 10)
    assert len(running("test_os")) == 1 and len(FakeListener.made) == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in warnings if "cannot read the cloud managers file" in r.getMessage()]) == 1
    assert not [r for r in warnings if r.name == notifications.LOG.name]  # the feed's warning says it all
    write(LEGACY_SECTION + f"notifications_url = {BUS.replace('bus1', 'bus2')}\n")  # readable again: followed again
    wait_until(lambda: [l.bus[0].brokers[0].host for l in running()] == ["bus2"])


def test_a_changed_bus_is_listened_to_once_the_old_connection_closed(cloud, following, monkeypatch):
    """Its exclusive queue has the same name: the new listener would be refused while the old holds it."""
    feed, service, write = following
    write(LEGACY_SECTION + f"notifications_url = {BUS}\n")
    wait_until(lambda: running("test_os"))
    monkeypatch.setattr(FakeListener, "hold_open", True)
    write(LEGACY_SECTION + f"notifications_url = {BUS}\nnotifications_exchange = openstack\n")
    old, = FakeListener.made
    wait_until(lambda: old.stopped)
    ticks(feed)
    assert FakeListener.made == [old] and service.listeners == []
    old.open = False
    wait_until(lambda: running("test_os"))
    assert running("test_os")[0].bus[1] == "openstack"


def test_sections_that_come_and_go_leave_no_thread(cloud, monkeypatch):
    monkeypatch.setattr(notifications, "NotificationListener", FakeListener)
    monkeypatch.setattr(FakeListener, "made", [])
    before = set(threading.enumerate())
    service = NotificationService("agent-1", lambda s, v: None, lambda section: PROJECT)
    bus = (parse(BUS, "test"), "nova")
    service.follow({})
    assert set(threading.enumerate()) == before  # nothing to listen to: no thread
    for round_ in range(5):
        service.follow({"a": bus, f"b{round_}": bus})
        wait_until(lambda: len(running()) == 2)
        service.follow({})
        wait_until(lambda: not running())
    wait_until(lambda: set(threading.enumerate()) - before == {service._thread})  # the projects' threads ended
    service.stop()
    assert set(threading.enumerate()) - before == set()
    service.follow({"a": bus})  # after the stop: nothing starts again
    time.sleep(0.1)
    assert len(FakeListener.made) == 10 and not running()
