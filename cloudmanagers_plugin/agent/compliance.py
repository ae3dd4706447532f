"""Compliance of monitored VMs: synapse's ``compliance_error`` and ``compliance_ok`` messages.

Every change event and every reconcile of a section compares each monitored VM with its
desired state (``judge``). A VM in the middle of a transition (a task under way, BUILD, a
reboot, a resize awaiting its confirmation with the desired flavor) gets no verdict yet, nor
does a VM that a request (a create, an update, a delete, a remediation) is changing: its
desired state is handed over when the request ends, so meanwhile the VM is going where the
request sends it, away from a recorded state that is about to be replaced. The latest event
of such a VM is kept (one per VM under change) and judged as soon as the last request on it
ends, against the desired state the request left, unless a newer event of the VM was judged
first. A request during which no event came changed nothing the monitor saw: only a VM not
compliant is judged then, on the latest view judged of it (kept while it is not compliant),
for the request may have made its desired state what the VM shows. A
drift (stopped or paused outside the controller, ERROR, another flavor, deleted) publishes
``compliance_error``; while the drift lasts it is repeated at most once per ``alert_interval``
(synapse's ``[compliance] alert_interval``, 3600 s by default); the VM back where it should be
publishes ``compliance_ok`` once. A VM deleted outside the controller cannot come back (the
agent never creates): after its one ``compliance_error`` it is no longer monitored.

With ``remediate = true`` in its section, a drift is answered by an ``update`` through the
controller, so through the one transition table (start, unpause, resume...; a resize with its
confirmation for a flavor drift): never a delete or a create. The ``compliance_error``
message says what was asked and what happened (``remediation``). A remediation waits its
turn (one at a time): one whose VM a request is changing by then, or whose desired state is
no longer the one judged, would undo that request, so it does nothing; its
``compliance_error`` still goes out (the drift was real when seen), with ``skipped`` and why,
and the next drift of the VM is reported and remediated at once, not an ``alert_interval`` later.

The message keeps synapse's shape: ``status`` is the desired state, ``current_status`` the VM
as read (the VM-details keys), ``compliant``, ``back_to_compliance``, ``timestamp`` and
``last_alert`` (ISO 8601, UTC), plus ``vm_id`` and ``reason``.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .. import states
from ..desired import DesiredState
from ..errors import CloudManagerError
from .desired_store import DesiredStateStore, Monitored

LOG = logging.getLogger(__name__)

DEFAULT_ALERT_INTERVAL = 3600.0  # synapse's [compliance] alert_interval
# Statuses Nova passes through on its way somewhere: no verdict until the VM settles.
TRANSIENT = frozenset({"BUILD", "REBOOT", "HARD_REBOOT", "RESIZE", "REVERT_RESIZE", "MIGRATING", "REBUILD",
                       "PASSWORD"})
DELETED = "DELETED"

View = Optional[Mapping[str, Any]]  # a VM as the change feed read it (VM-details keys); None: gone
Publish = Callable[[str, str, Dict[str, Any], Dict[str, Any]], None]  # section, msg_type, status, extra keys


@dataclass(frozen=True)
class Verdict:
    """``ok``, ``drift`` (with the reason and what differs) or ``pending`` (no verdict yet)."""

    kind: str
    reason: str = ""
    status_differs: bool = False
    flavor_differs: bool = False

    @property
    def deleted(self) -> bool:
        return self.kind == "drift" and self.reason.startswith("deleted")


OK, PENDING = Verdict("ok"), Verdict("pending")
Decision = Tuple[DesiredState, Verdict, float]  # what a VM was judged against, the verdict, when


def judge(desired: DesiredState, view: View) -> Verdict:
    """Compare a VM as read with its desired state."""
    if view is None or view.get("vm_event") == "deleted" or view.get("vm_status") == DELETED:
        return Verdict("drift", "deleted outside the controller")
    status, flavor = view.get("vm_status"), view.get("vm_flavor")
    if status == "ERROR":
        fault = view.get("vm_fault") or {}
        detail = f": {fault.get('message')}" if isinstance(fault, dict) and fault.get("message") else ""
        return Verdict("drift", f"the VM is in ERROR{detail}", status_differs=True)
    if view.get("vm_task_state") or status in TRANSIENT:
        return PENDING
    flavor_differs = bool(desired.flavor and flavor and flavor != desired.flavor)
    if status == states.VERIFY_RESIZE:
        return Verdict("drift", f"resized to flavor {flavor} outside the controller, desired {desired.flavor}",
                       flavor_differs=True) if flavor_differs else PENDING
    row = states.TRANSITIONS.get(desired.status)
    if not (row.reached(status) if row else status == desired.status):
        return Verdict("drift", f"the VM is {status}, desired {desired.status}", status_differs=True,
                       flavor_differs=flavor_differs)
    if flavor_differs:
        return Verdict("drift", f"the VM has flavor {flavor}, desired {desired.flavor}", flavor_differs=True)
    return OK


def remediation_attributes(vm_id: str, desired: DesiredState, verdict: Verdict) -> Optional[Dict[str, Any]]:
    """The ``update`` attributes that re-apply ``desired``; None when nothing may (a deleted VM)."""
    if verdict.deleted or not (verdict.status_differs or verdict.flavor_differs):
        return None
    attributes: Dict[str, Any] = {"name": vm_id}
    if verdict.status_differs:
        attributes["status"] = desired.status
    if verdict.flavor_differs:
        attributes.update(flavor=desired.flavor, confirm=True)
    return attributes


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ComplianceMonitor:
    """Judges monitored VMs on every event and reconcile; publishes and remediates (thread-safe).

    ``run_update(section, attributes)`` runs an ``update`` through the controller and returns
    its reply; ``remediates(section)`` says whether the section sets ``remediate = true``.
    """

    def __init__(self, store: DesiredStateStore, publish: Publish, alert_interval: float,
                 remediates: Callable[[str], bool], run_update: Callable[[str, Dict[str, Any]], Dict[str, Any]],
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._publish = publish
        self._alert_interval = alert_interval
        self._remediates = remediates
        self._run_update = run_update
        self._clock = clock
        self._lock = threading.Lock()
        self._last_alert: Dict[Tuple[str, str], float] = {}
        # (section, VM) -> its latest event while a request changed it, until judged or overtaken
        self._held: Dict[Tuple[str, str], Dict[str, Any]] = {}
        # (section, VM) -> the latest view judged of a VM not compliant, while it is not
        self._drifted: Dict[Tuple[str, str], View] = {}
        self._remediation = ThreadPoolExecutor(max_workers=1, thread_name_prefix="remediation")
        store.on_settled(self.on_settled)

    def on_event(self, section: str, status: Mapping[str, Any]) -> None:
        """A change event of ``section`` (VM-details keys plus ``vm_event``). The store is read and
        the verdict given under one lock, so an event kept while a request ran is judged before
        this newer one or not at all (``on_settled``)."""
        vm_id = status.get("vm_id")
        if not isinstance(vm_id, str):
            return
        key = (section, vm_id)
        with self._lock:
            under_change, entry = self._store.standing(section, vm_id)
            if under_change:
                self._held[key] = dict(status)
                return
            self._held.pop(key, None)  # kept from a request that just ended: this one is newer
            decision = self._decide(section, vm_id, entry, status)
        self._act(section, vm_id, status, decision)

    def on_settled(self, section: str, vm_id: str) -> None:
        """The last request changing the VM ended (on its thread): judge the latest event that came
        meanwhile against the desired state the request left. No event: the VM did not change as
        far as the monitor saw, so only one not compliant is judged again, on its latest view
        (the request may have made its desired state what the VM shows); no further request."""
        key = (section, vm_id)
        with self._lock:
            under_change, entry = self._store.standing(section, vm_id)
            if under_change:  # another request began since: its end judges the event
                return
            view = self._held.pop(key, None)
            if entry is None:  # not monitored (any more)
                self._drifted.pop(key, None)
                return
            if view is None:
                if entry.compliant or key not in self._drifted:
                    return
                view = self._drifted[key]
            decision = self._decide(section, vm_id, entry, view)
        self._act(section, vm_id, view, decision)

    def on_reconcile(self, section: str, views: Mapping[str, Mapping[str, Any]]) -> None:
        """A full read of ``section``: every VM it has, by id; a monitored VM missing is deleted."""
        for vm_id, entry in self._store.settled_vms(section).items():
            view = views.get(vm_id)
            with self._lock:
                decision = self._decide(section, vm_id, entry, view)
            self._act(section, vm_id, view, decision)

    def close(self) -> None:
        """Let a remediation under way finish."""
        self._remediation.shutdown(wait=True)

    def _decide(self, section: str, vm_id: str, entry: Optional[Monitored], view: View) -> Optional[Decision]:
        """What to say of the VM (None: nothing, or not monitored), its compliance noted; the lock is held."""
        if entry is None:
            return None
        verdict = judge(entry.desired, view)
        key = (section, vm_id)
        if verdict.kind == "ok" or verdict.deleted or (verdict.kind == "pending" and entry.compliant):
            self._drifted.pop(key, None)
        else:
            self._drifted[key] = view
        if verdict.kind == "pending":
            return None
        now = self._clock()
        if verdict.kind == "ok":
            if entry.compliant:
                return None
            self._store.set_compliant(section, vm_id, True)
            self._last_alert.pop(key, None)
        else:
            last = self._last_alert.get(key)
            if not entry.compliant and last is not None and now - last < self._alert_interval:
                return None
            self._store.set_compliant(section, vm_id, False)
            self._last_alert[key] = now
        return entry.desired, verdict, now

    def _act(self, section: str, vm_id: str, view: View, decision: Optional[Decision]) -> None:
        """Publish the verdict, or hand the drift to the remediation worker (outside the lock)."""
        if decision is None:
            return
        desired, verdict, now = decision
        if verdict.kind == "ok":
            self._send(section, vm_id, desired, view, verdict, now, None)
            return
        if verdict.deleted:
            self._store.forget(section, vm_id)
        attributes = remediation_attributes(vm_id, desired, verdict) if self._remediates(section) else None
        if attributes is not None:
            try:
                self._remediation.submit(self._remediate, section, vm_id, desired, view, verdict, now, attributes)
                return
            except RuntimeError:  # closed: a request that ended while the agent stops; say the drift
                LOG.info("section '%s': VM %s not remediated: the agent is stopping", section, vm_id)
        self._send(section, vm_id, desired, view, verdict, now, None)

    def _remediate(self, section: str, vm_id: str, desired: DesiredState, view: View, verdict: Verdict,
                   now: float, attributes: Dict[str, Any]) -> None:
        """Worker: run the update unless a request overtook the drift, then say what happened in the
        ``compliance_error``."""
        asked = {key: value for key, value in attributes.items() if key != "name"}
        overtaken = self._overtaken(section, vm_id, desired)
        if overtaken:
            with self._lock:  # the next drift is judged afresh: reported and remediated at once
                self._last_alert.pop((section, vm_id), None)
            LOG.info("section '%s': VM %s drifted (%s); remediation %s skipped: %s", section, vm_id,
                     verdict.reason, asked, overtaken)
            self._send(section, vm_id, desired, view, verdict, now, {"update": asked, "skipped": overtaken})
            return
        try:
            reply = self._run_update(section, attributes)
        except Exception as err:  # the message must still go out
            LOG.exception("remediating VM %s of '%s' failed", vm_id, section)
            reply = {"error": f"internal error ({type(err).__name__})"}
        if reply.get("error"):
            outcome = {"update": asked, "error": reply["error"]}
            LOG.warning("section '%s': VM %s drifted (%s); remediation %s failed: %s", section, vm_id,
                        verdict.reason, asked, reply["error"])
        else:
            outcome = {"update": asked, "vm_actions": (reply.get("status") or {}).get("vm_actions", [])}
            LOG.info("section '%s': VM %s drifted (%s); remediated: %s", section, vm_id, verdict.reason,
                     outcome["vm_actions"])
        self._send(section, vm_id, desired, view, verdict, now, outcome)

    def _overtaken(self, section: str, vm_id: str, desired: DesiredState) -> str:
        """Why a remediation judged against ``desired`` must not act now ('' when it may): a request
        is changing the VM, or one changed its desired state (or stopped monitoring it) since."""
        under_change, entry = self._store.standing(section, vm_id)
        if under_change:
            return "a request is changing the VM"
        if entry is None:
            return "the VM is no longer monitored"
        return "" if entry.desired == desired else f"a request changed its desired state to {entry.desired.status}"

    def _send(self, section: str, vm_id: str, desired: DesiredState, view: View, verdict: Verdict, now: float,
              remediation: Optional[Dict[str, Any]]) -> None:
        ok = verdict.kind == "ok"
        status = {"vm_id": vm_id, "vm_name": desired.vm_name, "vm_status": desired.status,
                  "vm_flavor": desired.flavor}
        current = dict(view) if view is not None else {"vm_id": vm_id, "vm_status": DELETED}
        extra: Dict[str, Any] = {"vm_id": vm_id, "current_status": current, "compliant": ok,
                                 "back_to_compliance": ok, "timestamp": _utc(now),
                                 "last_alert": None if ok else _utc(now)}
        if not ok:
            extra["reason"] = verdict.reason
            extra["remediation"] = remediation
        else:
            LOG.info("section '%s': VM %s is back to its desired state (%s)", section, vm_id, desired.status)
        if not ok and remediation is None:
            LOG.warning("section '%s': VM %s drifted from its desired state: %s", section, vm_id, verdict.reason)
        self._publish(section, "compliance_ok" if ok else "compliance_error", status, extra)


def compliance_monitor(controller: Any, feed: Any, alert_interval: float) -> Optional[ComplianceMonitor]:
    """The monitor of the controller's desired states, fed by every event and reconcile of ``feed``
    and publishing through it; None when the controller records no desired state."""
    store = getattr(controller, "desired_states", None)
    if store is None:
        return None

    def run_update(section: str, attributes: Dict[str, Any]) -> Dict[str, Any]:
        return controller.process({"collection": controller.__resource__, "action": "update", "id": section,
                                   "attributes": attributes})

    def remediates(section: str) -> bool:
        try:
            return controller.config.get(section).remediate
        except CloudManagerError:
            return False

    monitor = ComplianceMonitor(store, feed.publish, alert_interval, remediates, run_update)
    feed.subscribe(monitor.on_event)
    feed.on_reconcile(monitor.on_reconcile)
    return monitor
