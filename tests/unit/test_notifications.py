"""Nova's versioned notifications: the envelope, the bus URL, the coalescing of bursts, the filter."""

import json

import pytest

from cloudmanagers_plugin.agent.notifications import Coalescer, NotificationService, parse_notification
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
    url = parse("rabbit://guest:guest@127.0.0.1:5672/devcloud", "test")
    service = NotificationService("agent", {"cloud": (url, "nova")}, lambda s, v: refreshed.append((s, v)),
                                  lambda section: PROJECT, window=0)
    service._learn_projects()
    timers = Timers()
    service._coalescer = Coalescer(0, timers.later, service._read)
    service._hint("cloud", ("instance.update", VM, "another-project"))
    service._hint("cloud", ("instance.update", VM, PROJECT))
    timers.fire()
    assert refreshed == [("cloud", VM)]
    queue = service.listeners[0]._queue
    assert queue == "cloudmanagers-agent.agent.cloud"


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
