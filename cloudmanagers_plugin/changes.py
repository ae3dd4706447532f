"""Change events: what counts as a VM's transition, and one event for each, whoever saw it.

Several sources look at the same VMs (the delta poll, the full reconcile, a fetch triggered by
a notification); each hands the VM's details (the keys of a VM-details read) to the section's
``ChangeTracker``, which compares them with the last ones it reported and returns an event only
for a real transition. Two sources seeing one change make one event, a VM that did not change
makes none. Events are numbered per section (``sequence``), so a controller sees a gap or a
repeat at once.

The tracker keeps two states. The *current* one (what was last reported) is what new views are
compared with. The *confirmed* one only moves when the broker confirmed an event (``confirm``):
it is what ``snapshot`` returns and ``TrackerStore`` persists, with the polling watermark and the
last sequence number issued (saved before an event is handed over). After a restart the tracker
starts from the confirmed state, so a transition whose event was not confirmed is derived again
by the first reconcile, and a confirmed one is never sent twice; its numbering continues after
the last number issued, so a number never names two different events (after a crash, the numbers
of the events that were in flight are a gap).

No AMQP and no Nova here: the agent's feed (agent/events.py) publishes, polling.py asks the
cloud.
"""

import json
import logging
import os
import threading
import urllib.parse
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from .conffile import replace_atomically

LOG = logging.getLogger(__name__)

CREATED, CHANGED, DELETED_EVENT = "created", "changed", "deleted"
DELETED = "DELETED"  # Nova's status of a deleted VM (listed by changes-since)
# The keys of a VM-details read whose change is a transition. Not among them: the console (known
# or not depending on earlier reads), ``vm_updated`` (moves without a visible change) and
# ``vm_flavor`` (the flavor id, looked up by name: ``vm_flavor_name`` and ``vm_vcpus`` say it).
FINGERPRINT_KEYS = ("vm_name", "vm_status", "vm_task_state", "vm_flavor_name", "vm_vcpus", "vm_fault",
                    "vm_addresses", "vm_image", "vm_key_name", "vm_availability_zone", "vm_metadata", "vm_tags")
STATE_VERSION = 1


def fingerprint(view: Mapping[str, Any]) -> Tuple[str, ...]:
    """What must differ between two views of a VM for the second to be a transition."""
    return tuple(json.dumps(view.get(key), sort_keys=True) for key in FINGERPRINT_KEYS)


def nova_time(text: Optional[str]) -> Optional[datetime]:
    """Nova's ``updated`` (``2026-11-25T10:00:05Z``, sometimes with an offset) as an aware time."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def iso_minus(text: str, seconds: float) -> str:
    """``text`` (a Nova time) minus ``seconds``, as ``changes-since`` takes it."""
    moment = nova_time(text)
    if moment is None:
        raise ValueError(f"not a time: {text!r}")
    return (moment - timedelta(seconds=seconds)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ChangeTracker:
    """The VMs of one section as last reported, and the events that report their changes. Thread-safe.

    ``state`` is a ``snapshot()`` read back after a restart, or None for a section never seen:
    its first reconcile then only records the VMs (they were not created now) and reports nothing.
    """

    def __init__(self, section: str, state: Optional[Mapping[str, Any]] = None) -> None:
        self.section = section
        self._lock = threading.Lock()
        state = state or {}
        self._baselined = "vms" in state
        self._confirmed: Dict[str, Dict[str, Any]] = {vm_id: dict(view) for vm_id, view in state.get("vms", {}).items()}
        self._current: Dict[str, Dict[str, Any]] = {vm_id: dict(view) for vm_id, view in self._confirmed.items()}
        self._confirmed_sequence = int(state.get("sequence", 0))
        self._sequence = max(self._confirmed_sequence, int(state.get("issued", 0)))
        self._watermark: Optional[str] = state.get("watermark")
        self._confirmed_watermark = self._watermark
        # sequence -> (vm id, its view once the event is confirmed; None: the VM is gone)
        self._pending: "OrderedDict[int, Tuple[str, Optional[Dict[str, Any]]]]" = OrderedDict()
        self._acked: Set[int] = set()
        self._watermarks: List[Tuple[int, str]] = []  # (last sequence before it, watermark)
        self._dirty = False

    # -- observing -----------------------------------------------------------------------------

    def observe(self, view: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The event for this view of a VM, or None when nothing changed since the last report.

        A view with status DELETED (what ``changes-since`` lists) reports the deletion of a known
        VM; of a VM never reported it is nothing (it came and went between two looks).
        """
        vm_id = view["vm_id"]
        with self._lock:
            before = self._current.get(vm_id)
            if view.get("vm_status") == DELETED:
                return None if before is None else self._emit(vm_id, None, view, DELETED_EVENT)
            if before is not None and fingerprint(before) == fingerprint(view):
                self._current[vm_id] = dict(view)  # the same VM; keep its latest ``vm_updated``
                return None
            return self._emit(vm_id, dict(view), view, CHANGED if before is not None else CREATED)

    def observe_deleted(self, vm_id: str) -> Optional[Dict[str, Any]]:
        """The deletion of ``vm_id`` (Nova answered 404, or a full list lacks it), or None if unknown."""
        with self._lock:
            before = self._current.get(vm_id)
            if before is None:
                return None
            return self._emit(vm_id, None, gone(before), DELETED_EVENT)

    def reconcile(self, views: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """The events of a full list (``views`` by VM id: every VM that exists), deletions included.

        The first reconcile of a section never seen only records what exists.
        """
        with self._lock:
            if not self._baselined:
                self._baselined = self._dirty = True
                self._current = {vm_id: dict(view) for vm_id, view in views.items()}
                self._confirmed = {vm_id: dict(view) for vm_id, view in views.items()}
                return []
            missing = [vm_id for vm_id in self._current if vm_id not in views]
        events = [self.observe(view) for view in views.values()] + [self.observe_deleted(vm_id) for vm_id in missing]
        return [event for event in events if event is not None]

    def unchanged(self, vm_id: str, status: str, updated: Optional[str]) -> bool:
        """True when a listed VM needs no look: known with the same status and ``updated`` time, or
        deleted and not known (Nova's ``updated`` moves with every change of the VM's record)."""
        with self._lock:
            before = self._current.get(vm_id)
        if status == DELETED:
            return before is None
        return before is not None and before.get("vm_status") == status and before.get("vm_updated") == updated

    @property
    def baselined(self) -> bool:
        """False until the section's first full list was recorded."""
        with self._lock:
            return self._baselined

    def known(self) -> List[str]:
        """The ids of the VMs the tracker believes exist."""
        with self._lock:
            return list(self._current)

    def _emit(self, vm_id: str, kept: Optional[Dict[str, Any]], view: Mapping[str, Any], kind: str) -> Dict[str, Any]:
        self._sequence += 1
        if kept is None:
            self._current.pop(vm_id, None)
        else:
            self._current[vm_id] = kept
        self._pending[self._sequence] = (vm_id, kept)
        self._dirty = True  # the number is issued: saved before the event goes, never issued again
        return {**view, "vm_event": kind, "sequence": self._sequence}

    # -- the polling watermark -------------------------------------------------------------------

    @property
    def watermark(self) -> Optional[str]:
        """The latest ``updated`` time Nova listed (Nova's clock, never this host's)."""
        with self._lock:
            return self._watermark

    def note_updated(self, times: Iterable[Optional[str]]) -> None:
        """Move the watermark to the latest of ``times``; it is persisted once the events before it are."""
        with self._lock:
            latest = self._watermark
            for text in times:
                moment = nova_time(text)
                if moment is not None and (latest is None or moment > nova_time(latest)):
                    latest = text
            if latest == self._watermark:
                return
            self._watermark = latest
            if self._confirmed_sequence == self._sequence:
                self._confirmed_watermark, self._dirty = latest, True
            else:
                self._watermarks.append((self._sequence, latest))

    # -- confirmation and persistence ----------------------------------------------------------------

    def confirm(self, sequence: int) -> None:
        """The broker confirmed event ``sequence``: the confirmed state moves past every event up to
        the first one still unconfirmed (events are confirmed in order, but a republished one may not be)."""
        with self._lock:
            if sequence not in self._pending:
                return
            self._acked.add(sequence)
            while self._pending and next(iter(self._pending)) in self._acked:
                done, (vm_id, kept) = self._pending.popitem(last=False)
                self._acked.discard(done)
                if kept is None:
                    self._confirmed.pop(vm_id, None)
                else:
                    self._confirmed[vm_id] = kept
                self._confirmed_sequence, self._dirty = done, True
            while self._watermarks and self._watermarks[0][0] <= self._confirmed_sequence:
                self._confirmed_watermark = self._watermarks.pop(0)[1]

    @property
    def unconfirmed(self) -> int:
        """How many events wait for the broker's confirm."""
        with self._lock:
            return len(self._pending)

    def mark_unsaved(self) -> None:
        """The last snapshot could not be saved: the next ``snapshot(only_if_changed=True)`` returns one."""
        with self._lock:
            self._dirty = True

    def snapshot(self, only_if_changed: bool = False) -> Optional[Dict[str, Any]]:
        """The confirmed state, for ``TrackerStore.save`` (None with ``only_if_changed`` when it did not move)."""
        with self._lock:
            if only_if_changed and not self._dirty:
                return None
            self._dirty = False
            state: Dict[str, Any] = {"version": STATE_VERSION, "section": self.section,
                                     "sequence": self._confirmed_sequence, "issued": self._sequence,
                                     "watermark": self._confirmed_watermark}
            if self._baselined:
                state["vms"] = {vm_id: dict(view) for vm_id, view in self._confirmed.items()}
            return state


def gone(view: Mapping[str, Any]) -> Dict[str, Any]:
    """The last known view of a VM that no longer exists, as a deleted one reads."""
    return {**view, "vm_status": DELETED, "vm_task_state": None, "vm_vnc_port": "", "vm_console_url": None,
            "vm_console_unavailable": "the VM is DELETED"}


class TrackerStore:
    """One JSON file per section under the agent's state folder, replaced atomically."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, section: str) -> str:
        return os.path.join(self.directory, f"events-{urllib.parse.quote(section, safe='')}.json")

    def load(self, section: str) -> Optional[Dict[str, Any]]:
        """The saved state of ``section``; None when there is none, or it is unreadable (logged)."""
        path = self.path(section)
        try:
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            LOG.warning("events of '%s': cannot read %s (%s); starting without it (no event for what changed "
                        "while the agent was stopped)", section, path, getattr(err, "strerror", None) or err)
            return None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or not isinstance(state.get("vms", {}), dict):
            LOG.warning("events of '%s': %s is not a state this agent wrote; starting without it", section, path)
            return None
        return state

    def save(self, section: str, state: Mapping[str, Any]) -> None:
        """Write ``state`` so that a crash leaves the old file or the new one, never half of one."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        replace_atomically(self.path(section), json.dumps(state, sort_keys=True))
