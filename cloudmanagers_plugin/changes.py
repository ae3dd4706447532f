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

A VM created and deleted between two looks is only seen as the DELETED record ``changes-since``
lists: ``observe_listed`` reports it as ``created`` then ``deleted``. Since the polling's overlap
lists a DELETED record again and again, the tracker remembers the VMs whose deletion it reported
(``deleted`` in the state, with Nova's ``updated`` time of the record once listed) for as long as
a ``changes-since`` list may still show them, and reports each deletion once: a VM is forgotten
once the confirmed watermark minus the overlap (where a list starts, even after a restart) passed
its record's time, or, when no list showed its record, after the first list that did not. The
saved memory leaves out the deletions not confirmed yet: after a crash they are derived again.

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
STATE_VERSION = 1  # "deleted" was added without a new version: an older agent ignores it
WATERMARK_OVERLAP = 60.0  # seconds listed again before the watermark (clock skew between Nova's hosts)
# The most deleted VMs remembered per section: a bound, never reached unless more VMs than this are
# deleted within one overlap (the oldest are forgotten first, and could then be reported again).
MAX_REMEMBERED_DELETIONS = 2000
EARLIEST = "1970-01-01T00:00:00Z"


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


def _before(text: Optional[str], limit: datetime) -> bool:
    moment = nova_time(text)
    return moment is not None and moment < limit


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
    ``overlap``: how far before the watermark a ``changes-since`` list starts.
    """

    def __init__(self, section: str, state: Optional[Mapping[str, Any]] = None,
                 overlap: float = WATERMARK_OVERLAP) -> None:
        self.section = section
        self._lock = threading.Lock()
        self._overlap = overlap
        state = state or {}
        self._baselined = "vms" in state
        deleted = state.get("deleted") if isinstance(state.get("deleted"), dict) else None
        # The VMs whose deletion was reported: vm id -> Nova's ``updated`` of its DELETED record (None
        # until one is listed: the deletion was a 404 or a full list lacking the VM).
        self._deleted: Dict[str, Optional[str]] = {
            str(vm_id): at if isinstance(at, str) else None for vm_id, at in (deleted or {}).items()}
        # False until a changes-since list after the first full list recorded the DELETED records it
        # showed (a section never seen, or a state saved by an agent that did not remember deletions):
        # a DELETED record of a VM not known may then be a deletion already reported, or an old one.
        self._deletions_baselined = isinstance(deleted, dict)
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
        VM; of a VM not known it is nothing here (``observe_listed`` reports one that came and went).
        """
        with self._lock:
            return self._observe(view)

    def observe_listed(self, view: Mapping[str, Any]) -> List[Dict[str, Any]]:
        """The events of a VM as a ``changes-since`` list shows it: ``observe``'s, and for the DELETED
        record of a VM never reported, a ``created`` then a ``deleted`` event, both carrying the record
        as listed (the VM came and went between two looks). A VM whose deletion was reported is not
        reported again; the first list after the section's first full list only records the DELETED
        records of VMs not known (deleted before the agent's first look, or reported before an upgrade).
        """
        vm_id = view["vm_id"]
        with self._lock:
            if view.get("vm_status") != DELETED or vm_id in self._current or vm_id in self._deleted:
                event = self._observe(view)
                return [] if event is None else [event]
            if not self._deletions_baselined:
                self._remember_deleted(vm_id, view.get("vm_updated"))
                return []
            return [self._emit(vm_id, dict(view), view, CREATED),
                    self._emit(vm_id, None, view, DELETED_EVENT, view.get("vm_updated"))]

    def _observe(self, view: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        vm_id = view["vm_id"]
        before = self._current.get(vm_id)
        if view.get("vm_status") == DELETED:
            if before is not None:
                return self._emit(vm_id, None, view, DELETED_EVENT, view.get("vm_updated"))
            if vm_id in self._deleted:  # reported already; now its record's time is known
                self._remember_deleted(vm_id, view.get("vm_updated"))
            return None
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
        deleted, its deletion reported and its record's time known (Nova's ``updated`` moves with every
        change of the VM's record)."""
        with self._lock:
            before = self._current.get(vm_id)
            if status == DELETED:
                return before is None and vm_id in self._deleted and self._deleted[vm_id] == updated
        return before is not None and before.get("vm_status") == status and before.get("vm_updated") == updated

    def undated_deletions(self) -> List[str]:
        """The VMs whose deletion was reported and whose DELETED record no list showed yet."""
        with self._lock:
            return [vm_id for vm_id, at in self._deleted.items() if at is None]

    def listed_since(self, since: str, listed: Iterable[str], undated: Iterable[str]) -> None:
        """A ``changes-since`` list from ``since`` was read; ``listed``: the VMs it showed. A VM of
        ``undated`` (taken before the list was asked for: its deletion was committed) that it did not
        show has a record older than ``since``, or none any more: no later list shows it, and it is
        forgotten with the records older than ``since``. The first such list after the section's
        first full list ends the recording of DELETED records (``observe_listed``)."""
        with self._lock:
            shown = set(listed)
            older = iso_minus(since, 1)  # Nova's times are whole seconds
            for vm_id in undated:
                if vm_id not in shown and vm_id in self._deleted and self._deleted[vm_id] is None:
                    self._deleted[vm_id], self._dirty = older, True
            if not self._deletions_baselined:
                self._deletions_baselined = self._dirty = True
            self._forget_deletions()

    @property
    def baselined(self) -> bool:
        """False until the section's first full list was recorded."""
        with self._lock:
            return self._baselined

    def known(self) -> List[str]:
        """The ids of the VMs the tracker believes exist."""
        with self._lock:
            return list(self._current)

    def _emit(self, vm_id: str, kept: Optional[Dict[str, Any]], view: Mapping[str, Any], kind: str,
              deleted_at: Optional[str] = None) -> Dict[str, Any]:
        """``kept``: the VM's view from now on (None: deleted, its record's time ``deleted_at`` if known)."""
        self._sequence += 1
        if kept is None:
            self._current.pop(vm_id, None)
            self._remember_deleted(vm_id, deleted_at)
        else:
            self._current[vm_id] = kept
        self._pending[self._sequence] = (vm_id, kept)
        self._dirty = True  # the number is issued: saved before the event goes, never issued again
        return {**view, "vm_event": kind, "sequence": self._sequence}

    def _remember_deleted(self, vm_id: str, at: Optional[str]) -> None:
        if vm_id in self._deleted and at in (None, self._deleted[vm_id]):
            return
        self._deleted[vm_id], self._dirty = at, True
        while len(self._deleted) > MAX_REMEMBERED_DELETIONS:
            del self._deleted[next(iter(self._deleted))]

    def _forget_deletions(self) -> None:
        """Forget the deleted VMs whose record is older than where a ``changes-since`` list starts,
        even the first one after a restart (from the confirmed watermark): none shows them again."""
        watermark = nova_time(self._confirmed_watermark)
        if watermark is None:
            return
        limit = watermark - timedelta(seconds=self._overlap)
        old = [vm_id for vm_id, at in self._deleted.items() if _before(at, limit)]
        for vm_id in old:
            del self._deleted[vm_id]
        self._dirty = self._dirty or bool(old)

    # -- the polling watermark -------------------------------------------------------------------

    @property
    def watermark(self) -> Optional[str]:
        """The latest ``updated`` time Nova listed (Nova's clock, never this host's)."""
        with self._lock:
            return self._watermark

    @property
    def since(self) -> str:
        """Where the next ``changes-since`` list starts: the watermark minus the overlap, or the
        earliest time while Nova listed none (a project with no VM: its deleted records are listed)."""
        with self._lock:
            return EARLIEST if self._watermark is None else iso_minus(self._watermark, self._overlap)

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
                self._forget_deletions()
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
            moved = bool(self._watermarks) and self._watermarks[0][0] <= self._confirmed_sequence
            while self._watermarks and self._watermarks[0][0] <= self._confirmed_sequence:
                self._confirmed_watermark = self._watermarks.pop(0)[1]
            if moved:
                self._forget_deletions()

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
            if self._deletions_baselined:  # without the deletions still unconfirmed: derived again
                in_flight = {vm_id for vm_id, kept in self._pending.values() if kept is None}
                state["deleted"] = {vm_id: at for vm_id, at in self._deleted.items() if vm_id not in in_flight}
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
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or \
                not all(isinstance(state.get(key, {}), dict) for key in ("vms", "deleted")):
            LOG.warning("events of '%s': %s is not a state this agent wrote; starting without it", section, path)
            return None
        return state

    def save(self, section: str, state: Mapping[str, Any]) -> None:
        """Write ``state`` so that a crash leaves the old file or the new one, never half of one."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        replace_atomically(self.path(section), json.dumps(state, sort_keys=True))
