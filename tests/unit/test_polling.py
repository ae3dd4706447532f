"""Delta polling and reconcile (issue 10) against the faked Nova: one request per idle interval,
whatever the number of VMs; changes-since from Nova's own times; deletions seen both ways."""

from urllib.parse import parse_qs, urlparse

import pytest

from cloudmanagers_plugin.changes import ChangeTracker
from cloudmanagers_plugin.polling import SectionPoller, ViewSource

SECTION = "test_os"


def nova_gets(cloud, since):
    return [r for r in cloud.mocker.request_history[since:] if r.port == 8774]


@pytest.fixture
def poller(controller):
    return SectionPoller(SECTION, controller, ChangeTracker(SECTION, None))


def changed(server, updated, **fields):
    server.update(fields, updated=updated)


def test_the_controller_is_a_view_source(controller):
    assert isinstance(controller, ViewSource)
    assert controller.event_sections() == [SECTION]


@pytest.mark.parametrize("vm_count", [10, 500])
def test_an_idle_interval_costs_one_nova_request_whatever_the_number_of_vms(cloud, poller, vm_count):
    for index in range(vm_count):
        cloud.add_server(f"vm{index}", updated=f"2026-11-25T10:{index // 60 % 60:02d}:{index % 60:02d}Z")
    assert poller.poll() == []  # no watermark yet: the first full list records what exists
    for _ in range(3):
        before = len(cloud.mocker.request_history)
        assert poller.poll() == []
        made = nova_gets(cloud, before)
        assert len(made) == 1 and made[0].path == "/v2.1/servers/detail"
        assert len(cloud.mocker.request_history) == before + 1  # no token, flavor or console request either


def test_changes_since_starts_a_minute_before_novas_latest_updated_time(cloud, poller):
    cloud.add_server("a", updated="2026-11-25T10:00:05Z")
    cloud.add_server("b", updated="2026-11-25T10:30:00Z")
    poller.poll()
    before = len(cloud.mocker.request_history)
    poller.poll()
    query = parse_qs(urlparse(cloud.mocker.request_history[before].url).query)
    assert query["changes-since"] == ["2026-11-25T10:29:00Z"]


def test_a_change_is_one_event_even_when_listed_again(cloud, poller):
    server = cloud.add_server("web", updated="2026-11-25T10:00:05Z")
    poller.poll()
    changed(server, "2026-11-25T10:01:00Z", status="SHUTOFF")
    events = poller.poll()
    assert [(e["vm_name"], e["vm_event"], e["vm_status"], e["sequence"]) for e in events] == \
        [("web", "changed", "SHUTOFF", 1)]
    assert poller.poll() == [] and poller.poll() == []  # still within the overlap: listed, not reported


def test_a_change_stamped_before_the_watermark_is_still_seen(cloud, poller):
    cloud.add_server("late", updated="2026-11-25T10:00:00Z")
    cloud.add_server("new", updated="2026-11-25T10:10:00Z")
    poller.poll()
    late = next(s for s in cloud.servers.values() if s["name"] == "late")
    changed(late, "2026-11-25T10:09:30Z", status="PAUSED")  # another host's clock, 30 s behind
    assert [e["vm_status"] for e in poller.poll()] == ["PAUSED"]


def test_created_resized_errored_and_deleted_through_polling(cloud, poller, call):
    poller.poll()
    server = cloud.add_server("web", updated="2026-11-25T10:00:10Z")
    created, = poller.poll()
    assert created["vm_event"] == "created" and created["vm_name"] == "web" and created["vm_flavor_name"] == "m1.tiny"
    changed(server, "2026-11-25T10:00:20Z", flavor={"original_name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
            status="VERIFY_RESIZE")
    resized, = poller.poll()
    assert (resized["vm_status"], resized["vm_flavor_name"], resized["vm_flavor"], resized["vm_vcpus"]) == \
        ("VERIFY_RESIZE", "m1.medium", "3", 2)
    changed(server, "2026-11-25T10:00:30Z", status="ERROR", fault={"code": 500, "message": "disk on fire"})
    errored, = poller.poll()
    assert errored["vm_status"] == "ERROR" and errored["vm_fault"] == "disk on fire"
    cloud.clock = "2026-11-25T10:00:40Z"
    assert "error" not in call("delete", name="web", force=True)
    deleted, = poller.poll()
    assert (deleted["vm_event"], deleted["vm_status"], deleted["sequence"]) == ("deleted", "DELETED", 4)


def test_reconcile_finds_the_deletions_nova_pruned(cloud, poller):
    gone = cloud.add_server("gone")
    cloud.add_server("stays")
    poller.poll()
    del cloud.servers[gone["id"]]  # deleted, and its record already pruned: changes-since cannot show it
    assert poller.poll() == []
    events, views = poller.reconcile()
    assert [(e["vm_name"], e["vm_event"]) for e in events] == [("gone", "deleted")]
    assert [v["vm_name"] for v in views.values()] == ["stays"]


def test_reconcile_sees_a_change_that_did_not_move_updated(cloud, poller):
    server = cloud.add_server("web")
    poller.poll()
    server["metadata"] = {"owner": "ops"}
    assert poller.poll() == []  # same updated time: not looked at
    events, _ = poller.reconcile()
    assert [e["vm_metadata"] for e in events] == [{"owner": "ops"}]


def test_refresh_reads_one_vm_and_a_404_is_a_deletion(cloud, poller):
    server = cloud.add_server("web")
    assert poller.refresh(server["id"]) is None  # before the first full list: nothing to compare with
    poller.poll()
    server["status"] = "PAUSED"
    before = len(cloud.mocker.request_history)
    event = poller.refresh(server["id"])
    assert event["vm_status"] == "PAUSED" and len(nova_gets(cloud, before)) == 1
    assert poller.poll() == []  # the poll sees it later: the same transition, no second event
    del cloud.servers[server["id"]]
    assert poller.refresh(server["id"])["vm_event"] == "deleted"
    assert poller.refresh(server["id"]) is None


def watching(cloud, poller):
    """The first full list, then the first changes-since list (which records the DELETED records)."""
    cloud.add_server("stays", updated="2026-11-25T12:00:00Z")
    poller.poll()
    assert poller.poll() == []


def test_a_vm_created_and_deleted_between_two_polls_is_reported_once(cloud, poller, call):
    watching(cloud, poller)
    cloud.clock = "2026-11-25T12:00:20Z"
    cloud.add_server("brief", updated="2026-11-25T12:00:10Z")
    assert "error" not in call("delete", name="brief", force=True)  # before the next poll
    events = poller.poll()
    assert [(e["vm_name"], e["vm_event"], e["vm_status"], e["sequence"]) for e in events] == \
        [("brief", "created", "DELETED", 1), ("brief", "deleted", "DELETED", 2)]
    assert events[0]["vm_flavor_name"] == "m1.tiny" and events[0]["vm_addresses"]
    for _ in range(3):  # listed again and again within the overlap: one request, no look, no event
        before = len(cloud.mocker.request_history)
        assert poller.poll() == []
        assert len(cloud.mocker.request_history) == before + 1


def test_deleted_records_from_before_the_first_look_are_not_reported(cloud, poller, call):
    cloud.clock = "2026-11-25T12:00:20Z"
    cloud.add_server("old")
    assert "error" not in call("delete", name="old", force=True)  # before the agent ever looked
    watching(cloud, poller)
    assert poller.poll() == []


def test_a_deletion_seen_by_a_404_or_a_reconcile_is_not_reported_again_by_the_poll(cloud, poller, call):
    first = cloud.add_server("first")
    second = cloud.add_server("second")
    watching(cloud, poller)
    cloud.clock = "2026-11-25T12:00:20Z"
    assert "error" not in call("delete", name="first", force=True)
    by_404 = poller.refresh(first["id"])  # a notification's read
    assert "error" not in call("delete", name="second", force=True)
    by_reconcile, = poller.reconcile()[0]
    assert (by_404["vm_event"], by_reconcile["vm_event"], by_reconcile["vm_name"]) == ("deleted", "deleted", "second")
    assert poller.poll() == [] and poller.poll() == []
    for event in (by_404, by_reconcile):
        poller.tracker.confirm(event["sequence"])
    # remembered with their records' times, for as long as a changes-since list shows them
    assert poller.tracker.snapshot()["deleted"] == {first["id"]: cloud.clock, second["id"]: cloud.clock}


def test_a_project_with_no_vm_is_polled_with_changes_since_so_a_vm_that_came_and_went_shows(cloud, poller, call):
    poller.poll()  # the first full list: nothing, so no watermark
    before = len(cloud.mocker.request_history)
    assert poller.poll() == []
    query = parse_qs(urlparse(cloud.mocker.request_history[before].url).query)
    assert query["changes-since"] == ["1970-01-01T00:00:00Z"] and len(nova_gets(cloud, before)) == 1
    cloud.add_server("brief")
    assert "error" not in call("delete", name="brief", force=True)
    assert [e["vm_event"] for e in poller.poll()] == ["created", "deleted"]


def test_a_vm_already_gone_when_a_notification_reads_it_is_left_to_the_next_poll(cloud, poller, call):
    watching(cloud, poller)
    brief = cloud.add_server("brief")
    assert "error" not in call("delete", name="brief", force=True)
    assert poller.refresh(brief["id"]) is None  # 404, never reported: nothing to say what it was
    assert [(e["vm_name"], e["vm_event"]) for e in poller.poll()] == [("brief", "created"), ("brief", "deleted")]
