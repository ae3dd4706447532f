"""The change tracker (issue 10): one event per real transition, whoever saw it, and a confirmed
state that survives a restart without losing or repeating a transition."""

import json
import os
import threading

import pytest

from cloudmanagers_plugin import changes
from cloudmanagers_plugin.changes import ChangeTracker, TrackerStore, iso_minus


def view(vm_id="vm-1", **changes):
    base = {"cloudmanager": "cm", "url": "http://cloud", "vm_id": vm_id, "vm_name": f"name-{vm_id}",
            "vm_status": "ACTIVE", "vm_task_state": None, "vm_vcpus": 1, "vm_flavor": "1", "vm_flavor_name": "m1.tiny",
            "vm_vnc_port": "", "vm_console_url": None, "vm_console_unavailable": "not read",
            "vm_addresses": {"private": [{"address": "10.0.0.5", "version": 4, "type": "fixed", "mac": "fa"}]},
            "vm_image": "img", "vm_key_name": None, "vm_availability_zone": "nova", "vm_metadata": {}, "vm_tags": [],
            "vm_created": "2026-11-25T10:00:00Z", "vm_updated": "2026-11-25T10:00:05Z"}
    base.update(changes)
    return base


@pytest.fixture
def tracker():
    tracker = ChangeTracker("cm", None)
    assert tracker.reconcile({"vm-1": view()}) == []  # the first full list only records what exists
    return tracker


def test_first_reconcile_records_without_events_then_changes_are_events(tracker):
    assert tracker.observe(view()) is None
    paused = tracker.observe(view(vm_status="PAUSED", vm_updated="2026-11-25T10:01:00Z"))
    assert paused["vm_event"] == "changed" and paused["vm_status"] == "PAUSED" and paused["sequence"] == 1
    assert set(view()) <= set(paused)  # every VM-details key, plus vm_event and sequence


@pytest.mark.parametrize("change", [
    {"vm_status": "SHUTOFF"}, {"vm_task_state": "powering-off"}, {"vm_flavor_name": "m1.small", "vm_vcpus": 2},
    {"vm_status": "ERROR", "vm_fault": "No valid host"}, {"vm_name": "renamed"}, {"vm_metadata": {"a": "b"}},
    {"vm_tags": ["x"]}, {"vm_addresses": {}},
])
def test_each_kind_of_transition_is_one_event(tracker, change):
    event = tracker.observe(view(**change))
    assert event["vm_event"] == "changed" and all(event[key] == value for key, value in change.items())
    assert tracker.observe(view(**change)) is None  # the same state seen again by another source


@pytest.mark.parametrize("noise", [{"vm_updated": "2026-11-25T11:00:00Z"}, {"vm_console_url": "http://x"},
                                   {"vm_vnc_port": "6080"}, {"vm_flavor": "m1.tiny"}])
def test_what_is_not_a_transition_makes_no_event(tracker, noise):
    assert tracker.observe(view(**noise)) is None


def test_created_and_deleted_and_unknown_deleted(tracker):
    created = tracker.observe(view("vm-2"))
    assert created["vm_event"] == "created" and created["sequence"] == 1
    deleted = tracker.observe(view("vm-2", vm_status="DELETED", vm_updated="2026-11-25T12:00:00Z"))
    assert deleted["vm_event"] == "deleted" and deleted["vm_status"] == "DELETED" and deleted["sequence"] == 2
    assert tracker.observe(view("vm-2", vm_status="DELETED")) is None  # listed again by the next poll
    assert tracker.observe_deleted("vm-2") is None  # and a 404 afterwards
    assert tracker.observe(view("vm-3", vm_status="DELETED")) is None  # came and went unseen: nothing


def test_deleted_by_404_carries_the_last_known_keys(tracker):
    event = tracker.observe_deleted("vm-1")
    assert event["vm_event"] == "deleted" and event["vm_status"] == "DELETED" and event["vm_task_state"] is None
    assert event["vm_name"] == "name-vm-1" and event["vm_flavor_name"] == "m1.tiny" and event["vm_id"] == "vm-1"
    assert event["vm_console_url"] is None


def test_reconcile_reports_creations_changes_and_the_vms_it_lacks(tracker):
    tracker.observe(view("vm-2"))
    events = tracker.reconcile({"vm-1": view(vm_status="SHUTOFF"), "vm-3": view("vm-3")})
    assert [(e["vm_id"], e["vm_event"]) for e in events] == [("vm-1", "changed"), ("vm-3", "created"),
                                                            ("vm-2", "deleted")]
    assert [e["sequence"] for e in events] == [2, 3, 4]
    assert tracker.reconcile({"vm-1": view(vm_status="SHUTOFF"), "vm-3": view("vm-3")}) == []


def test_two_sources_racing_on_one_change_make_one_event(tracker):
    results = []
    barrier = threading.Barrier(8)

    def look():
        barrier.wait()
        results.append(tracker.observe(view(vm_status="SHUTOFF")))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([r for r in results if r is not None]) == 1


def test_unchanged_skips_known_vms_with_the_same_updated_time_and_deletions_already_reported(tracker):
    assert tracker.unchanged("vm-1", "ACTIVE", "2026-11-25T10:00:05Z")
    assert not tracker.unchanged("vm-1", "ACTIVE", "2026-11-25T10:09:00Z")
    assert not tracker.unchanged("vm-1", "PAUSED", "2026-11-25T10:00:05Z")
    assert not tracker.unchanged("vm-1", "DELETED", "2026-11-25T10:09:00Z")  # a known VM deleted
    assert not tracker.unchanged("vm-9", "DELETED", "2026-11-25T10:09:00Z")  # came and went: looked at
    assert not tracker.unchanged("vm-9", "ACTIVE", "2026-11-25T10:09:00Z")
    tracker.observe(view(vm_status="DELETED", vm_updated="2026-11-25T10:09:00Z"))
    assert tracker.unchanged("vm-1", "DELETED", "2026-11-25T10:09:00Z")  # its deletion was reported


def test_watermark_is_novas_latest_updated_time():
    tracker = ChangeTracker("cm", None)
    tracker.note_updated(["2026-11-25T10:00:05Z", None, "garbage", "2026-11-25T10:02:00+00:00", "2026-11-25T10:01:00Z"])
    assert tracker.watermark == "2026-11-25T10:02:00+00:00"
    tracker.note_updated(["2026-11-25T09:00:00Z"])
    assert tracker.watermark == "2026-11-25T10:02:00+00:00"
    assert iso_minus(tracker.watermark, 60) == "2026-11-25T10:01:00Z"


def test_the_confirmed_state_moves_only_with_confirms_in_order(tracker):
    first = tracker.observe(view(vm_status="PAUSED"))
    tracker.note_updated(["2026-11-25T10:05:00Z"])
    second = tracker.observe(view(vm_status="SHUTOFF"))
    assert tracker.snapshot()["sequence"] == 0 and tracker.snapshot()["vms"]["vm-1"]["vm_status"] == "ACTIVE"
    tracker.confirm(second["sequence"])  # a republished event may be confirmed out of order
    assert tracker.snapshot()["sequence"] == 0 and tracker.unconfirmed == 2
    tracker.confirm(first["sequence"])
    state = tracker.snapshot()
    assert state["sequence"] == 2 and state["vms"]["vm-1"]["vm_status"] == "SHUTOFF"
    assert state["watermark"] == "2026-11-25T10:05:00Z" and tracker.unconfirmed == 0
    assert tracker.snapshot(only_if_changed=True) is None


def test_the_watermark_waits_for_the_events_before_it(tracker):
    event = tracker.observe(view(vm_status="PAUSED"))
    tracker.note_updated(["2026-11-25T10:05:00Z"])
    assert tracker.snapshot()["watermark"] is None
    tracker.confirm(event["sequence"])
    assert tracker.snapshot()["watermark"] == "2026-11-25T10:05:00Z"


def test_restart_from_the_confirmed_state_loses_nothing_and_repeats_nothing(tmp_path, tracker):
    store = TrackerStore(str(tmp_path / "state"))
    confirmed = tracker.observe(view(vm_status="PAUSED"))
    tracker.confirm(confirmed["sequence"])
    lost = tracker.observe(view(vm_status="SHUTOFF"))  # published, never confirmed: the agent died
    assert lost["sequence"] == 2
    store.save("cm", tracker.snapshot())

    restarted = ChangeTracker("cm", store.load("cm"))
    events = restarted.reconcile({"vm-1": view(vm_status="SHUTOFF")})
    # derived again from the confirmed state; number 2 may have reached someone: never reused
    assert [(e["vm_event"], e["vm_status"], e["sequence"]) for e in events] == [("changed", "SHUTOFF", 3)]
    assert restarted.observe(view(vm_status="SHUTOFF")) is None


def test_a_graceful_restart_continues_the_numbering_without_a_gap(tmp_path, tracker):
    store = TrackerStore(str(tmp_path))
    for status in ("PAUSED", "ACTIVE"):
        tracker.confirm(tracker.observe(view(vm_status=status))["sequence"])
    store.save("cm", tracker.snapshot())
    restarted = ChangeTracker("cm", store.load("cm"))
    assert restarted.observe(view(vm_status="SHUTOFF"))["sequence"] == 3


def test_store_is_atomic_per_section_and_survives_bad_files(tmp_path, caplog):
    store = TrackerStore(str(tmp_path / "state"))
    assert store.load("cm/a b") is None
    store.save("cm/a b", {"version": 1, "section": "cm/a b", "sequence": 3, "watermark": None, "vms": {}})
    assert store.load("cm/a b")["sequence"] == 3
    assert os.listdir(tmp_path / "state") == ["events-cm%2Fa%20b.json"]  # no temporary file left
    with open(store.path("cm/a b"), "w") as handle:
        handle.write("{half")
    assert store.load("cm/a b") is None and "cannot read" in caplog.text
    with open(store.path("cm/a b"), "w") as handle:
        json.dump({"version": 99}, handle)
    assert store.load("cm/a b") is None


# -- a VM that came and went between two looks, reported once ------------------------------------

GONE_AT = "2026-11-25T10:00:30Z"


def record(vm_id, updated=GONE_AT):
    """A DELETED record as ``changes-since`` lists it."""
    return view(vm_id, vm_status="DELETED", vm_updated=updated)


def first_delta_list(tracker, listed=(), undated=()):
    """What a poll does after its list: the watermark, then the list's end (the first one records)."""
    since = tracker.since
    tracker.note_updated(record["vm_updated"] for record in listed)
    for shown in listed:
        assert tracker.observe_listed(shown) == []
    tracker.listed_since(since, [record["vm_id"] for record in listed], undated)


@pytest.fixture
def watching(tracker):
    """A section after its first full list and its first changes-since list."""
    tracker.note_updated(["2026-11-25T10:00:05Z"])
    first_delta_list(tracker)
    return tracker


def confirm_all(tracker, events):
    for event in events:
        tracker.confirm(event["sequence"])


def test_a_vm_that_came_and_went_is_created_then_deleted_once(watching):
    events = watching.observe_listed(record("vm-2"))
    assert [(e["vm_event"], e["sequence"]) for e in events] == [("created", 1), ("deleted", 2)]
    assert all(e["vm_status"] == "DELETED" and e["vm_name"] == "name-vm-2" and set(view()) <= set(e) for e in events)
    assert watching.observe_listed(record("vm-2")) == []  # listed again within the overlap
    assert watching.unchanged("vm-2", "DELETED", GONE_AT)  # not even looked at by the next polls
    assert watching.observe_deleted("vm-2") is None and watching.observe(record("vm-2")) is None
    assert watching.reconcile({"vm-1": view()}) == []
    assert watching.observe_listed(record("vm-3"))[0]["sequence"] == 3


def test_the_first_delta_list_after_the_first_full_list_only_records_deleted_records():
    tracker = ChangeTracker("cm", None)
    tracker.observe_listed(record("early"))  # before the baseline: nothing to compare with
    tracker.reconcile({"vm-1": view()})
    tracker.note_updated(["2026-11-25T10:00:05Z"])
    first_delta_list(tracker, [record("early"), record("old", "2026-11-25T10:00:01Z")])
    assert tracker.snapshot()["deleted"] == {"early": GONE_AT, "old": "2026-11-25T10:00:01Z"}
    assert tracker.observe_listed(record("old", "2026-11-25T10:00:01Z")) == []  # listed again: still nothing
    assert [e["vm_event"] for e in tracker.observe_listed(record("new"))] == ["created", "deleted"]
    assert tracker.observe_listed(view("vm-1", vm_status="DELETED"))[0]["vm_event"] == "deleted"  # a known VM


@pytest.mark.parametrize("seen_by", ["404", "reconcile"])
def test_a_deletion_seen_otherwise_is_not_reported_again_when_listed(watching, seen_by):
    if seen_by == "404":
        deleted = watching.observe_deleted("vm-1")
    else:
        deleted, = watching.reconcile({})
    assert deleted["vm_event"] == "deleted"
    assert watching.undated_deletions() == ["vm-1"]
    assert not watching.unchanged("vm-1", "DELETED", GONE_AT)  # its record's time is not known yet
    assert watching.observe_listed(record("vm-1")) == []
    assert watching.unchanged("vm-1", "DELETED", GONE_AT) and watching.undated_deletions() == []


def test_deleted_vms_are_forgotten_once_no_delta_list_can_show_them(watching):
    confirm_all(watching, watching.observe_listed(record("vm-2")))
    watching.note_updated([GONE_AT])
    assert set(watching.snapshot()["deleted"]) == {"vm-2"}
    watching.note_updated(["2026-11-25T10:01:30Z"])  # the next list starts at 10:00:30: still shown
    assert "vm-2" in watching.snapshot()["deleted"]
    watching.note_updated(["2026-11-25T10:01:31Z"])
    assert "vm-2" not in watching.snapshot()["deleted"]


def test_a_deletion_no_list_showed_is_forgotten_after_the_next_list(watching):
    watching.confirm(watching.observe_deleted("vm-1")["sequence"])  # its record already pruned by Nova
    undated = watching.undated_deletions()
    first_delta_list(watching, [], undated)
    assert watching.snapshot()["deleted"] == {} and watching.undated_deletions() == []


def test_a_deleted_vm_is_remembered_as_long_as_the_confirmed_watermark_needs_it(watching):
    confirm_all(watching, watching.observe_listed(record("vm-2")))
    watching.note_updated([GONE_AT])
    pending = watching.observe(view(vm_status="PAUSED"))  # not confirmed: the saved watermark stays
    watching.note_updated(["2026-11-25T10:05:00Z"])
    assert "vm-2" in watching.snapshot()["deleted"]  # a restart lists from 10:00:30 - 60 s again
    watching.confirm(pending["sequence"])
    assert "vm-2" not in watching.snapshot()["deleted"]


def test_the_memory_of_deleted_vms_is_capped(watching, monkeypatch):
    monkeypatch.setattr(changes, "MAX_REMEMBERED_DELETIONS", 3)
    for index in range(5):
        confirm_all(watching, watching.observe_listed(record(f"gone-{index}")))
    assert list(watching.snapshot()["deleted"]) == ["gone-2", "gone-3", "gone-4"]  # the oldest forgotten


def test_a_state_without_deleted_vms_loads_and_its_first_delta_list_records(tmp_path):
    store = TrackerStore(str(tmp_path))
    old = {"version": 1, "section": "cm", "sequence": 4, "issued": 4, "watermark": "2026-11-25T10:00:30Z",
           "vms": {"vm-1": view()}}  # as the previous version wrote it
    store.save("cm", old)
    tracker = ChangeTracker("cm", store.load("cm"))
    assert tracker.snapshot() == old  # nothing added until its first delta list
    # listed again: deleted (and reported) by the previous version, or came and went unseen
    first_delta_list(tracker, [record("reported-before")])
    assert tracker.snapshot()["deleted"] == {"reported-before": GONE_AT}
    assert [e["sequence"] for e in tracker.observe_listed(record("new"))] == [5, 6]


def test_a_restart_keeps_the_deleted_vms_and_derives_unconfirmed_ones_again(tmp_path, watching):
    store = TrackerStore(str(tmp_path))
    confirm_all(watching, watching.observe_listed(record("vm-2")))
    lost = watching.observe_listed(record("vm-3"))  # never confirmed: the agent died
    gone_by_404 = watching.observe_deleted("vm-1")
    watching.confirm(gone_by_404["sequence"])  # confirmed out of order: saved only behind vm-3's
    store.save("cm", watching.snapshot())
    assert store.load("cm")["deleted"] == {"vm-2": GONE_AT}

    restarted = ChangeTracker("cm", store.load("cm"))
    assert restarted.reconcile({})[0]["vm_id"] == "vm-1"  # vm-1's deletion was not confirmed in order
    assert restarted.observe_listed(record("vm-2")) == []
    events = restarted.observe_listed(record("vm-3"))
    assert [(e["vm_event"], e["sequence"]) for e in events] == [("created", 7), ("deleted", 8)]
    assert [e["sequence"] for e in lost] == [3, 4]
