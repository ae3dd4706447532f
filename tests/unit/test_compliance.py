"""Monitored desired state: the compliance rules, their rate limit, remediation, the store, the controller."""

import json
import os
import re
import threading

import pytest

from cloudmanagers_plugin import CloudmanagersController
from cloudmanagers_plugin.agent.compliance import ComplianceMonitor, judge, remediation_attributes
from cloudmanagers_plugin.agent.desired_store import FILE_NAME, DesiredStateStore
from cloudmanagers_plugin.desired import DesiredState
from tests.support.controller import status_of
from tests.support.fakecloud import NOVA

WANT = DesiredState("ACTIVE", "1", "web")


def view(status="ACTIVE", task=None, flavor="1", **extra):
    return {"vm_id": "vm1", "vm_status": status, "vm_task_state": task, "vm_flavor": flavor, **extra}


@pytest.mark.parametrize("current, kind, reason", [
    (view(), "ok", ""),
    (view("SHUTOFF"), "drift", "the VM is SHUTOFF, desired ACTIVE"),
    (view("PAUSED"), "drift", "the VM is PAUSED, desired ACTIVE"),
    (view("ERROR", vm_fault={"message": "disk gone"}), "drift", "the VM is in ERROR: disk gone"),
    (view("ERROR", task="rebooting_hard"), "drift", "the VM is in ERROR"),
    (view(flavor="2"), "drift", "the VM has flavor 2, desired 1"),
    (None, "drift", "deleted outside the controller"),
    (view("DELETED", vm_event="deleted"), "drift", "deleted outside the controller"),
    (view("ACTIVE", task="powering-off"), "pending", ""),
    (view("BUILD"), "pending", ""),
    (view("REBOOT"), "pending", ""),
    (view("VERIFY_RESIZE"), "pending", ""),
    (view("VERIFY_RESIZE", flavor="3"), "drift", "resized to flavor 3 outside the controller, desired 1"),
], ids=["ok", "stopped", "paused", "error", "error-during-task", "flavor", "gone", "deleted-event", "task",
        "build", "reboot", "verify-own-resize", "verify-other-resize"])
def test_rules(current, kind, reason):
    verdict = judge(WANT, current)
    assert (verdict.kind, verdict.reason) == (kind, reason)


def test_equivalent_statuses_and_unchecked_flavor():
    assert judge(DesiredState("SHELVED"), view("SHELVED_OFFLOADED")).kind == "ok"
    assert judge(DesiredState("SHUTOFF", None), view("SHUTOFF", flavor="3")).kind == "ok"


def test_remediation_goes_through_an_update_never_a_create():
    assert remediation_attributes("vm1", WANT, judge(WANT, view("SHUTOFF"))) == {"name": "vm1", "status": "ACTIVE"}
    assert remediation_attributes("vm1", WANT, judge(WANT, view(flavor="2"))) == {
        "name": "vm1", "flavor": "1", "confirm": True}
    assert remediation_attributes("vm1", WANT, judge(WANT, None)) is None


# -- the monitor ----------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def store(tmp_path):
    store = DesiredStateStore(str(tmp_path / "state"))
    store.record("cloud", "vm1", WANT)
    return store


def monitor_for(store, remediate=False, reply=None, interval=3600.0):
    sent, updates, clock = [], [], Clock()

    def run_update(section, attributes):
        updates.append((section, attributes))
        return reply if reply is not None else {"status": {"vm_actions": ["start"]}}

    monitor = ComplianceMonitor(store, lambda *message: sent.append(message), interval, lambda _s: remediate,
                                run_update, clock)
    return monitor, sent, updates, clock


def test_a_drift_alerts_once_per_interval_and_once_back(store):
    monitor, sent, _updates, clock = monitor_for(store)
    monitor.on_event("cloud", view("SHUTOFF"))
    monitor.on_event("cloud", view("SHUTOFF"))
    clock.now += 3599
    monitor.on_reconcile("cloud", {"vm1": view("SHUTOFF")})
    assert [m[1] for m in sent] == ["compliance_error"]
    section, msg_type, status, extra = sent[0]
    assert section == "cloud" and status == {"vm_id": "vm1", "vm_name": "web", "vm_status": "ACTIVE", "vm_flavor": "1"}
    assert extra["current_status"]["vm_status"] == "SHUTOFF" and extra["compliant"] is False
    assert extra["reason"] == "the VM is SHUTOFF, desired ACTIVE" and extra["remediation"] is None
    assert extra["back_to_compliance"] is False and extra["last_alert"] == extra["timestamp"]
    clock.now += 2
    monitor.on_event("cloud", view("SHUTOFF"))
    assert [m[1] for m in sent] == ["compliance_error"] * 2
    monitor.on_event("cloud", view("ACTIVE", task="powering-on"))
    monitor.on_event("cloud", view("ACTIVE"))
    monitor.on_event("cloud", view("ACTIVE"))
    assert [m[1] for m in sent] == ["compliance_error"] * 2 + ["compliance_ok"]
    ok = sent[-1][3]
    assert ok["compliant"] is True and ok["back_to_compliance"] is True and ok["last_alert"] is None
    monitor.on_event("cloud", view("PAUSED"))  # a new drift alerts at once
    assert [m[1] for m in sent][-1] == "compliance_error"


def test_unmonitored_vms_and_transitions_say_nothing(store):
    monitor, sent, _updates, _clock = monitor_for(store)
    monitor.on_event("cloud", {**view("SHUTOFF"), "vm_id": "other"})
    monitor.on_event("other-section", view("SHUTOFF"))
    monitor.on_event("cloud", view("ACTIVE", task="rebooting"))
    monitor.on_event("cloud", view("ACTIVE"))
    assert sent == []


def test_a_vm_deleted_outside_alerts_once_and_is_no_longer_monitored(store):
    monitor, sent, updates, _clock = monitor_for(store, remediate=True)
    monitor.on_reconcile("cloud", {})
    monitor.close()
    assert [m[1] for m in sent] == ["compliance_error"] and updates == []  # never a create
    assert sent[0][3]["current_status"] == {"vm_id": "vm1", "vm_status": "DELETED"}
    assert store.get("cloud", "vm1") is None


def test_remediation_runs_an_update_and_says_so(store):
    monitor, sent, updates, _clock = monitor_for(store, remediate=True)
    monitor.on_event("cloud", view("SHUTOFF"))
    monitor.close()
    assert updates == [("cloud", {"name": "vm1", "status": "ACTIVE"})]
    assert sent[0][3]["remediation"] == {"update": {"status": "ACTIVE"}, "vm_actions": ["start"]}


def test_a_remediation_that_fails_says_why(store):
    monitor, sent, _updates, _clock = monitor_for(store, remediate=True, reply={"status": {}, "error": "cannot go"})
    monitor.on_event("cloud", view("ERROR"))
    monitor.close()
    assert sent[0][3]["remediation"] == {"update": {"status": "ACTIVE"}, "error": "cannot go"}


# -- the store --------------------------------------------------------------------------------


def test_the_store_survives_a_restart_and_writes_atomically(tmp_path):
    folder = str(tmp_path / "state")
    store = DesiredStateStore(folder)
    store.record("cloud", "vm1", WANT)
    store.record("cloud", "vm2", DesiredState("SHUTOFF", None, "db"))
    store.set_compliant("cloud", "vm1", False)
    store.forget("cloud", "vm2")
    assert sorted(os.listdir(folder)) == [FILE_NAME]  # no temporary file left behind
    again = DesiredStateStore(folder)
    assert again.monitored("cloud") == store.monitored("cloud")
    assert again.get("cloud", "vm1").desired == WANT and again.get("cloud", "vm1").compliant is False
    with open(os.path.join(folder, FILE_NAME), encoding="utf-8") as handle:
        assert json.load(handle)["format"] == 1


def test_follow_changes_only_monitored_vms(store):
    store.follow("cloud", "vm1", DesiredState("SHUTOFF", "1", "web"))
    store.follow("cloud", "vm9", DesiredState("SHUTOFF", "1", "x"))
    assert store.get("cloud", "vm1").desired.status == "SHUTOFF"
    assert store.knows("cloud", "vm1") and not store.knows("cloud", "vm9")


def test_an_unreadable_store_is_moved_aside(tmp_path, caplog):
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / FILE_NAME).write_text("{not json")
    assert DesiredStateStore(str(folder)).monitored("cloud") == {}
    assert (folder / (FILE_NAME + ".unreadable")).exists() and "cannot be read" in caplog.text


# -- the controller's side --------------------------------------------------------------------


@pytest.fixture
def monitored_call(conf_path, cloud, tmp_path):
    store = DesiredStateStore(str(tmp_path / "monitor"))
    controller = CloudmanagersController(config_path=conf_path, agent_uuid="a", desired_states=store)

    def run(action, monitor=None, **attributes):
        message = {"collection": "cloudmanagers", "action": action, "id": "test_os", "attributes": attributes}
        if monitor is not None:
            message["monitor"] = monitor
        return controller.process(message)

    return run, store


def test_create_with_monitor_records_the_desired_state(monitored_call, cloud):
    call, store = monitored_call
    status = status_of(call("create", monitor=True, name="web", flavor="1", image="cirros-fake"))
    assert status["vm_monitored"] is True
    assert store.get("test_os", status["vm_id"]).desired == DesiredState("ACTIVE", "1", "web")


def test_updates_move_the_desired_state_and_monitor_false_forgets(monitored_call, cloud):
    call, store = monitored_call
    vm = cloud.add_server("web")["id"]
    status_of(call("update", monitor=True, name="web"))  # monitor alone: the VM as it is
    assert store.get("test_os", vm).desired == DesiredState("ACTIVE", "1", "web")
    status_of(call("update", name="web", status="shutdown"))  # the controller's own change is followed
    assert store.get("test_os", vm).desired == DesiredState("SHUTOFF", "1", "web")
    status_of(call("update", name="web", flavor="2", confirm=True))
    assert store.get("test_os", vm).desired == DesiredState("SHUTOFF", "2", "web")
    assert status_of(call("update", monitor=False, name="web"))["vm_monitored"] is False
    assert not store.knows("test_os", vm)
    status_of(call("update", name="web", status="ACTIVE"))
    assert not store.knows("test_os", vm)  # not monitored: nothing recorded


def test_a_delete_through_the_controller_is_no_drift(monitored_call, cloud):
    call, store = monitored_call
    vm = cloud.add_server("web")["id"]
    status_of(call("update", monitor=True, name="web", status="ACTIVE"))
    status_of(call("delete", name="web"))
    assert not store.knows("test_os", vm)


def test_without_a_recorder_monitor_changes_nothing(call, cloud):
    """Inside a legacy synapse agent (no store), monitor is accepted and ignored."""
    cloud.add_server("web")
    status = status_of(call("update", name="web", status="ACTIVE", monitor=True))
    assert "vm_monitored" not in status


def test_monitor_alone_on_a_vm_in_a_reboot_wants_it_active(monitored_call, cloud):
    call, store = monitored_call
    vm = cloud.add_server("web", status="REBOOT")["id"]
    status_of(call("update", monitor=True, name="web"))
    assert store.get("test_os", vm).desired == DesiredState("ACTIVE", "1", "web")


def test_the_agent_builds_its_monitor_and_listeners_from_the_sections(tmp_path, cloud):
    """Only sections naming a bus get a listener; the monitor follows the feed and each section's remediate."""
    from cloudmanagers_plugin.agent.compliance import compliance_monitor
    from cloudmanagers_plugin.agent.notifications import buses, notification_service
    from tests.support.controller import LEGACY_SECTION, write_config

    text = (LEGACY_SECTION + "remediate = true\n" + LEGACY_SECTION.replace("[test_os]", "[quiet]")
            + "notifications_url = rabbit://u:p@bus/nova\n")
    controller = CloudmanagersController(config_path=write_config(tmp_path / "c.conf", text), agent_uuid="a",
                                         desired_states=DesiredStateStore(str(tmp_path / "s")))

    class Feed:
        def __init__(self):
            self.listeners, self.reconcilers, self.refreshed, self.sections_listeners = [], [], [], []

        def subscribe(self, listener):
            self.listeners.append(listener)

        def on_reconcile(self, listener):
            self.reconcilers.append(listener)

        def publish(self, *message):
            pass

        def refresh_vm(self, section, vm_id):
            self.refreshed.append((section, vm_id))

        def on_sections(self, listener):
            self.sections_listeners.append(listener)

    feed = Feed()
    service = notification_service("a", controller, feed)
    assert service.listeners == [] and len(feed.sections_listeners) == 1  # the feed's readings start them
    assert list(buses(controller.config, ["test_os", "quiet"])) == ["quiet"]
    monitor = compliance_monitor(controller, feed, 60)
    assert feed.listeners == [monitor.on_event] and feed.reconcilers == [monitor.on_reconcile]
    assert monitor._remediates("test_os") and not monitor._remediates("quiet") and not monitor._remediates("nosuch")
    assert compliance_monitor(CloudmanagersController(config_path=write_config(tmp_path / "d.conf", text)),
                              feed, 60) is None


# -- a VM under change: the request's own change is not a drift ---------------------------------


def notify_during(cloud, method, path, notify):
    """Nova answers ``method path`` as before, then a change event arrives (``notify(vm_id)``)
    while the request that asked is still running: a notification is that quick."""
    handler = {"POST": cloud._action, "DELETE": cloud._delete}[method]

    def respond(request, context):
        body = handler(request, context)
        notify(request.path.split("/servers/")[1].split("/")[0])
        return body

    cloud.mocker.register_uri(method, re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+{path}$"), json=respond)


@pytest.fixture
def watched(monitored_call, cloud, request):
    """A monitored VM 'web' (ACTIVE) of section test_os, and a monitor that remediates (unless
    parametrized indirectly with False) through the same controller: (call, store, monitor, sent, vm_id)."""
    call, store = monitored_call
    sent = []
    remediate = getattr(request, "param", True)

    def run_update(section, attributes):
        return call("update", **attributes)

    monitor = ComplianceMonitor(store, lambda *message: sent.append(message), 3600.0, lambda _s: remediate,
                                run_update)
    vm = cloud.add_server("web")["id"]
    status_of(call("update", monitor=True, name="web"))
    yield call, store, monitor, sent, vm
    monitor.close()


def as_nova_has_it(cloud, vm, event="changed"):
    server = cloud.servers.get(vm) or cloud.deleted[vm]
    return {**view(server["status"], server["OS-EXT-STS:task_state"]), "vm_id": vm, "vm_event": event}


def test_an_update_s_own_change_is_no_drift_and_is_not_undone(watched, cloud):
    """The race of issue 'compliance in flight': PAUSED arrives while `update PAUSED, monitor, wait` runs;
    judged against the old desired state (ACTIVE) it was a compliance_error, and remediation un-paused."""
    call, store, monitor, sent, vm = watched
    notify_during(cloud, "POST", "/action", lambda vm_id: monitor.on_event("test_os", as_nova_has_it(cloud, vm_id)))
    status = status_of(call("update", monitor=True, name="web", status="PAUSED", wait=5))
    monitor.close()
    assert status["vm_status"] == "PAUSED" and status["vm_actions"] == ["pause"]
    assert sent == [] and cloud.servers[vm]["status"] == "PAUSED"
    assert [r for r in cloud.requests() if r.endswith("/action")] == [f"POST /v2.1/servers/{vm}/action"]
    assert not store.standing("test_os", vm)[0] and store.get("test_os", vm).desired.status == "PAUSED"


def test_after_the_update_events_are_judged_against_its_desired_state(watched, cloud):
    call, store, monitor, sent, vm = watched
    status_of(call("update", name="web", status="PAUSED"))  # monitored: the desired state follows
    monitor.on_event("test_os", as_nova_has_it(cloud, vm))
    monitor.on_reconcile("test_os", {vm: as_nova_has_it(cloud, vm)})
    assert sent == []  # PAUSED is what it should be now
    cloud.servers[vm]["status"] = "ACTIVE"  # unpaused outside the controller
    monitor.on_event("test_os", as_nova_has_it(cloud, vm))
    monitor.close()
    assert [m[1] for m in sent] == ["compliance_error"]
    assert sent[0][3]["remediation"] == {"update": {"status": "PAUSED"}, "vm_actions": ["pause"]}
    assert cloud.servers[vm]["status"] == "PAUSED"


def test_a_failed_update_leaves_the_desired_state_as_it_was(watched, cloud):
    call, store, monitor, sent, vm = watched
    cloud.mocker.register_uri("POST", re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/action$"), status_code=500,
                              json={"computeFault": {"code": 500, "message": "boom"}})
    assert "error" in call("update", monitor=True, name="web", status="PAUSED")
    assert not store.standing("test_os", vm)[0]  # released, though the request failed
    assert store.get("test_os", vm).desired == DesiredState("ACTIVE", "1", "web")
    cloud.servers[vm]["status"] = "PAUSED"  # the drift is judged against the state still in force
    monitor.on_event("test_os", as_nova_has_it(cloud, vm))
    monitor.close()
    assert [m[1] for m in sent] == ["compliance_error"] and sent[0][3]["reason"] == "the VM is PAUSED, desired ACTIVE"


def test_a_delete_through_the_controller_reports_no_deletion(watched, cloud):
    call, store, monitor, sent, vm = watched
    notify_during(cloud, "DELETE", "", lambda vm_id: monitor.on_event("test_os", as_nova_has_it(cloud, vm_id,
                                                                                                "deleted")))
    status_of(call("delete", name="web"))
    monitor.on_reconcile("test_os", {})
    assert sent == [] and not store.knows("test_os", vm)


def test_a_vm_under_change_is_counted_released_and_not_persisted(tmp_path, store):
    """Two requests on one VM at once: it is under change until both ended, exceptions included."""
    monitor, sent, updates, _clock = monitor_for(store, remediate=True)
    first_in, second_done = threading.Event(), threading.Event()

    def second():
        with store.changing("cloud", "vm1"):
            first_in.wait(5)
        second_done.set()

    with pytest.raises(RuntimeError):
        with store.changing("cloud", "vm1"):
            worker = threading.Thread(target=second)
            worker.start()
            first_in.set()
            assert second_done.wait(5)
            assert store.standing("cloud", "vm1")[0]  # the second ended; the first still runs
            monitor.on_event("cloud", view("SHUTOFF"))
            monitor.on_reconcile("cloud", {})
            assert sent == [] and updates == []
            assert DesiredStateStore(os.path.dirname(store.path)).standing("cloud", "vm1")[0] is False
            raise RuntimeError("the request fails")
    worker.join()
    under_change, entry = store.standing("cloud", "vm1")
    assert not under_change and entry.desired == WANT
    monitor.close()  # the event that came meanwhile was judged once both ended
    assert [m[1] for m in sent] == ["compliance_error"] and updates == [("cloud", {"name": "vm1", "status": "ACTIVE"})]


def test_a_remediation_overtaken_by_a_request_is_skipped(store, caplog):
    """Queued behind another remediation, it meets a request changing the VM: it does nothing, says
    so, and the VM's next drift is remediated at once. One whose desired state a request changed
    meanwhile does nothing either."""
    store.record("cloud", "vm0", DesiredState("ACTIVE", "1", "db"))
    monitor, sent, updates, clock = monitor_for(store, remediate=True)
    busy = threading.Event()

    def run_update(section, attributes):
        busy.wait(5)
        updates.append(attributes)
        return {"status": {"vm_actions": ["start"]}}

    def remediations_done():
        monitor._remediation.submit(lambda: None).result()  # one worker: what was queued before has run

    monitor._run_update = run_update
    caplog.set_level("INFO")
    monitor.on_event("cloud", {**view("SHUTOFF"), "vm_id": "vm0"})  # a remediation under way
    monitor.on_event("cloud", view("SHUTOFF"))  # vm1's waits its turn
    with store.changing("cloud", "vm1"):  # a user's request arrives
        busy.set()
        remediations_done()
    assert updates == [{"name": "vm0", "status": "ACTIVE"}]
    skipped = [m[3] for m in sent if m[3]["vm_id"] == "vm1"]
    assert skipped[0]["remediation"] == {"update": {"status": "ACTIVE"}, "skipped": "a request is changing the VM"}
    assert "remediation {'status': 'ACTIVE'} skipped: a request is changing the VM" in caplog.text
    clock.now += 60  # well within alert_interval of the skipped one's alert
    monitor.on_event("cloud", view("PAUSED"))
    remediations_done()
    assert updates[-1] == {"name": "vm1", "status": "ACTIVE"}
    store.record("cloud", "vm1", DesiredState("SHUTOFF", "1", "web"))  # a request ended after the judgment
    monitor._remediate("cloud", "vm1", WANT, view("PAUSED"), judge(WANT, view("PAUSED")), clock(),
                       {"name": "vm1", "status": "ACTIVE"})
    monitor.close()
    assert len(updates) == 2
    assert sent[-1][3]["remediation"]["skipped"] == "a request changed its desired state to SHUTOFF"


def test_a_vm_changed_outside_process_is_a_bug_said_loudly(conf_path, cloud, tmp_path):
    """The marks live as long as a request run by process(); an action called around it could not be released."""
    controller = CloudmanagersController(config_path=conf_path, desired_states=DesiredStateStore(str(tmp_path / "s")))
    cloud.add_server("web")
    with pytest.raises(RuntimeError, match="outside process"):
        controller.update(res_id="test_os", attributes={"name": "web", "status": "PAUSED"})
    assert CloudmanagersController(config_path=conf_path).update(  # the legacy synapse agent's path: as before
        res_id="test_os", attributes={"name": "web", "status": "PAUSED"})["vm_actions"] == ["pause"]


# -- judged when the request ends: the latest event that came while it ran ----------------------


@pytest.mark.parametrize("watched", [False], indirect=True)
def test_an_update_that_puts_a_drifted_vm_back_is_ok_when_it_ends(watched, cloud):
    """Before: the unpause's event came during the update and was dropped, so compliance_ok waited
    for the VM's next event or the next reconcile (30 min by default)."""
    call, store, monitor, sent, vm = watched
    cloud.servers[vm]["status"] = "PAUSED"  # paused outside the controller
    monitor.on_event("test_os", as_nova_has_it(cloud, vm))
    assert [m[1] for m in sent] == ["compliance_error"]
    notify_during(cloud, "POST", "/action", lambda vm_id: monitor.on_event("test_os", as_nova_has_it(cloud, vm_id)))
    status = status_of(call("update", name="web", status="ACTIVE", wait=5))
    assert status["vm_actions"] == ["unpause"]
    assert [m[1] for m in sent] == ["compliance_error", "compliance_ok"]  # as the request ended
    assert sent[1][3]["current_status"]["vm_status"] == "ACTIVE" and store.get("test_os", vm).compliant


@pytest.mark.parametrize("watched", [False], indirect=True)
def test_a_failed_update_s_drift_is_reported_when_it_ends(watched, cloud):
    """Nova paused the VM but the update got a 500: the desired state stays ACTIVE, and the PAUSED
    that came while the request ran is a drift, reported as it ends (before: at the next reconcile)."""
    call, store, monitor, sent, vm = watched

    def pause_then_fail(request, context):
        cloud.servers[vm]["status"] = "PAUSED"
        monitor.on_event("test_os", as_nova_has_it(cloud, vm))
        context.status_code = 500
        return {"computeFault": {"code": 500, "message": "boom"}}

    cloud.mocker.register_uri("POST", re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/action$"), json=pause_then_fail)
    assert "error" in call("update", monitor=True, name="web", status="PAUSED")
    assert [m[1] for m in sent] == ["compliance_error"]
    assert sent[0][3]["reason"] == "the VM is PAUSED, desired ACTIVE" and not store.get("test_os", vm).compliant


def test_overlapping_requests_are_judged_once_after_the_last_on_the_latest_event(store):
    monitor, sent, _updates, _clock = monitor_for(store)
    first, second = store.changing("cloud", "vm1"), store.changing("cloud", "vm1")
    first.__enter__()
    second.__enter__()
    monitor.on_event("cloud", view("SHUTOFF"))
    first.__exit__(None, None, None)  # one request ended, the other still runs
    monitor.on_event("cloud", view("PAUSED"))
    assert sent == []
    second.__exit__(None, None, None)
    assert [m[1] for m in sent] == ["compliance_error"]
    assert sent[0][3]["current_status"]["vm_status"] == "PAUSED"
    with store.changing("cloud", "vm1"):  # a later request with no event: nothing to judge again
        pass
    assert len(sent) == 1 and monitor._held == {}


def test_an_event_judged_after_the_release_overtakes_the_kept_one(tmp_path):
    """The request ended and a newer event was judged before the monitor heard of the end: the
    older event kept during the request is never judged after it."""
    store = DesiredStateStore(str(tmp_path / "state"))
    store.record("cloud", "vm1", WANT)
    store.on_settled(lambda section, vm_id: monitor.on_event(section, view("ACTIVE")))  # heard first
    monitor, sent, _updates, _clock = monitor_for(store)
    with store.changing("cloud", "vm1"):
        monitor.on_event("cloud", view("SHUTOFF"))
    assert sent == [] and monitor._held == {}


def test_a_request_without_events_brings_no_verdict(watched, cloud):
    call, store, monitor, sent, vm = watched
    status_of(call("update", name="web", status="ACTIVE"))  # nothing to do: no Nova action, no event
    with store.changing("test_os", vm):
        store.follow("test_os", vm, DesiredState("SHUTOFF", "1", "web"))  # not what it shows: its next event says
    monitor.close()
    assert sent == [] and monitor._held == {}
    assert [r for r in cloud.requests() if r.endswith("/action")] == []


@pytest.mark.parametrize("watched", [False], indirect=True)
def test_a_drifted_vm_whose_desired_state_a_request_made_what_it_shows_is_ok_when_it_ends(watched, cloud):
    """No event during the request, but the VM was not compliant: judged again on its latest view,
    against the desired state the request left (no further request to Nova)."""
    call, store, monitor, sent, vm = watched
    cloud.servers[vm]["status"] = "PAUSED"  # paused outside the controller
    monitor.on_event("test_os", as_nova_has_it(cloud, vm))
    status_of(call("update", name="web", rename="web2"))  # still drifted, and said so already
    assert [m[1] for m in sent] == ["compliance_error"]
    before = len(cloud.requests())
    assert status_of(call("update", name=vm, status="PAUSED"))["vm_actions"] == []  # the user accepts the pause
    assert [m[1] for m in sent] == ["compliance_error", "compliance_ok"]
    assert sent[1][2]["vm_status"] == "PAUSED" and sent[1][3]["current_status"]["vm_status"] == "PAUSED"
    assert [r for r in cloud.requests()[before:] if "/action" in r] == []
    assert monitor._drifted == {}


def test_a_failing_listener_does_not_fail_the_request(store, caplog):
    store.on_settled(lambda section, vm_id: 1 / 0)
    with store.changing("cloud", "vm1"):
        pass
    assert not store.standing("cloud", "vm1")[0] and "the request on VM vm1 of 'cloud' ended; judging the VM then failed" in caplog.text


def test_a_request_that_ends_while_the_agent_stops_says_the_drift_without_remediating(store):
    monitor, sent, updates, _clock = monitor_for(store, remediate=True)
    with store.changing("cloud", "vm1"):
        monitor.on_event("cloud", view("SHUTOFF"))
        monitor.close()  # the agent stops while a worker still runs the request
    assert updates == [] and [m[1] for m in sent] == ["compliance_error"] and sent[0][3]["remediation"] is None
