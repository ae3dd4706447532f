"""The change tracker (issue 10): one event per real transition, whoever saw it, and a confirmed
state that survives a restart without losing or repeating a transition."""

import json
import os
import threading

import pytest

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


def test_unchanged_skips_known_vms_with_the_same_updated_time_and_unknown_deleted_ones(tracker):
    assert tracker.unchanged("vm-1", "ACTIVE", "2026-11-25T10:00:05Z")
    assert not tracker.unchanged("vm-1", "ACTIVE", "2026-11-25T10:09:00Z")
    assert not tracker.unchanged("vm-1", "PAUSED", "2026-11-25T10:00:05Z")
    assert not tracker.unchanged("vm-1", "DELETED", "2026-11-25T10:09:00Z")  # a known VM deleted
    assert tracker.unchanged("vm-9", "DELETED", "2026-11-25T10:09:00Z")
    assert not tracker.unchanged("vm-9", "ACTIVE", "2026-11-25T10:09:00Z")


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
