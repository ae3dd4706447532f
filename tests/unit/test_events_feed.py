"""The agent's change feed without a broker (issue 10): what it publishes, that it publishes an
unconfirmed event again instead of giving it up, and that it saves only what was confirmed."""

import json
import queue
import re
import time

import pytest

from cloudmanagers_plugin.agent.events import ChangeFeed
from cloudmanagers_plugin.changes import TrackerStore

SECTION = "test_os"
UUID = "3a468145-1afc-40d3-baf5-3ba4c0fc3561"


class FakeLoop:
    """The IOLoop's two entry points; the test runs what was handed over, as the I/O thread would."""

    def __init__(self):
        self.handed = queue.Queue()
        self.later = []

    def add_callback_threadsafe(self, callback):
        self.handed.put(callback)

    def call_later(self, delay, callback):
        self.later.append((delay, callback))

    def run(self, until, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "timed out"
            try:
                self.handed.get(timeout=0.05)()
            except queue.Empty:
                pass


class FakeConsumer:
    def __init__(self):
        self.published = []  # (exchange, routing key, properties, message, settled)

    def publish_unsolicited(self, exchange, routing_key, properties, body, settled):
        self.published.append((exchange, routing_key, properties, json.loads(body), settled))


@pytest.fixture
def feed(controller, tmp_path):
    made = []

    def make(poll_interval=0.05):
        feed = ChangeFeed(controller, "cloudmanagers", TrackerStore(str(tmp_path / "state")), UUID,
                          ("events.x", "cm.rk"), "guest", poll_interval, 3600)
        loop, consumer = FakeLoop(), FakeConsumer()
        feed.attach(consumer, loop)
        made.append(feed)
        return feed, loop, consumer

    yield make
    for feed in made:
        feed.close()


def test_an_event_is_a_synapse_status_message_and_its_confirm_is_saved(cloud, feed, tmp_path):
    server = cloud.add_server("web")
    feed, loop, consumer = feed()
    seen = []
    feed.subscribe(lambda section, event: seen.append((section, event["vm_status"])))
    reconciled = []
    feed.on_reconcile(lambda section, views: reconciled.append((section, sorted(v["vm_name"] for v in views.values()))))
    feed.start()
    loop.run(lambda: reconciled)
    assert reconciled == [(SECTION, ["web"])] and consumer.published == []  # the baseline reports nothing
    server.update(status="SHUTOFF", updated="2026-11-25T10:05:00Z")
    loop.run(lambda: consumer.published)
    exchange, routing_key, properties, message, settled = consumer.published[0]
    assert (exchange, routing_key) == ("events.x", "cm.rk") and properties.correlation_id is None
    assert properties.delivery_mode == 2 and properties.message_id == f"{SECTION}/1"
    assert {k: message[k] for k in ("uuid", "collection", "resource_id", "msg_type")} == \
        {"uuid": UUID, "collection": "cloudmanagers", "resource_id": SECTION, "msg_type": "status"}
    status = message["status"]
    assert (status["vm_name"], status["vm_status"], status["vm_event"], status["sequence"]) == \
        ("web", "SHUTOFF", "changed", 1)
    assert seen == [(SECTION, "SHUTOFF")]
    saved = TrackerStore(str(tmp_path / "state"))
    assert saved.load(SECTION)["sequence"] == 0  # not confirmed yet
    settled("")
    deadline = time.monotonic() + 5
    while saved.load(SECTION)["sequence"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert saved.load(SECTION)["vms"][server["id"]]["vm_status"] == "SHUTOFF"


def test_an_unconfirmed_event_is_published_again_not_given_up(cloud, feed):
    server = cloud.add_server("web")
    feed, loop, consumer = feed()
    feed.start()
    loop.run(lambda: feed.sections)
    time.sleep(0.2)
    server.update(status="PAUSED", updated="2026-11-25T10:05:00Z")
    loop.run(lambda: consumer.published)
    consumer.published[0][4]("connection lost before the reply was confirmed")
    (delay, again), = loop.later
    assert delay == 1
    again()  # the back-off elapsed: the I/O thread sends it again, the same event
    assert consumer.published[1][3] == consumer.published[0][3]
    consumer.published[1][4]("the broker refused the reply")
    assert loop.later[1][0] == 2  # backing off
    feed.stop()
    consumer.published[1][4]("connection lost")  # stopping: left to the next start, which derives it again
    assert len(loop.later) == 2


def test_refresh_vm_reads_that_vm_and_publish_sends_other_messages(cloud, feed):
    server = cloud.add_server("web")
    feed, loop, consumer = feed(poll_interval=3600)
    feed.start()
    loop.run(lambda: feed.sections)
    time.sleep(0.2)  # the first reconcile
    server["status"] = "SUSPENDED"
    before = len(cloud.mocker.request_history)
    feed.refresh_vm(SECTION, server["id"])
    feed.refresh_vm("no_such_section", server["id"])
    loop.run(lambda: consumer.published)
    assert consumer.published[0][3]["status"]["vm_status"] == "SUSPENDED"
    assert [r.path for r in cloud.mocker.request_history[before:]] == [f"/v2.1/servers/{server['id']}"]
    feed.publish(SECTION, "compliance_error", {"vm_status": "ACTIVE"}, {"current_status": {"vm_status": "SHUTOFF"}})
    loop.run(lambda: len(consumer.published) == 2)
    message = consumer.published[1][3]
    assert (message["msg_type"], message["status"], message["current_status"]) == \
        ("compliance_error", {"vm_status": "ACTIVE"}, {"vm_status": "SHUTOFF"})
    assert consumer.published[1][2].message_id is None


def test_a_failing_cloud_is_logged_once_and_polling_goes_on(cloud, feed, caplog):
    cloud.add_server("web")
    cloud.mocker.get("http://127.0.0.1:8774/v2.1/servers/detail?limit=1000", status_code=500,
                     json={"computeFault": {"code": 500, "message": "nova is down"}})
    feed, loop, _consumer = feed()
    feed.start()
    time.sleep(0.5)
    failures = [r for r in caplog.records if "reconcile failed" in r.getMessage()]
    assert len(failures) == 1 and "nova is down" in failures[0].getMessage()


def test_a_failing_delta_poll_is_followed_by_a_full_list(cloud, feed):
    """A cloud that refuses the changes-since list (e.g. a Neutron that takes no long URL) still
    gets its changes reported, by the full list that follows each failed poll."""
    server = cloud.add_server("web")
    cloud.mocker.get(re.compile(r".*/servers/detail\?.*changes-since"), status_code=500,
                     json={"computeFault": {"code": 500, "message": "URI Too Long"}})
    feed, loop, consumer = feed()
    feed.start()
    loop.run(lambda: feed.reconciles(SECTION) >= 1)
    server.update(status="SHUTOFF", updated="2026-11-25T10:05:00Z")
    loop.run(lambda: consumer.published)
    assert consumer.published[0][3]["status"]["vm_status"] == "SHUTOFF"
    assert feed.reconciles(SECTION) >= 2
