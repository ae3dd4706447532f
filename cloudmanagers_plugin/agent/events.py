"""The agent's change feed: every section's VMs watched, each transition published as an event.

One thread per section (``SectionWatcher``) polls its cloud (polling.py) on a timer, runs the
full reconcile at start, every ``reconcile_interval`` and after a delta poll failed (a cloud may
refuse a ``changes-since`` list that a plain list passes), and reads single VMs on request
(``ChangeFeed.refresh_vm``, for a source that knows which VM changed). Nothing of this runs on
the I/O thread: an event is handed over with ``add_callback_threadsafe`` and published on the
reply channel with publisher confirms, as the synapse agent publishes its unsolicited messages
(``[events] exchange`` and ``routing_key``, no correlation id).

No event is given up. One the broker did not confirm (connection lost, channel closed, exchange
missing) is published again, after a back-off, once the connection is back. The section's
confirmed state (changes.py) moves only with the broker's confirms, and is saved under
``[agent] state_dir`` by the section's thread, off the I/O thread. A stopped agent (SIGTERM)
waits for the confirms of what it handed over: its next start repeats nothing and loses nothing.
A killed one's events in flight (handed over, not yet confirmed and saved) are derived again by
its next start's first reconcile, under new numbers: their old numbers are a gap, and a
transition whose event did arrive is reported a second time.
"""

import json
import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from pika import BasicProperties

from ..changes import ChangeTracker, TrackerStore
from ..errors import CloudManagerError
from ..polling import SectionPoller, ViewSource, Views
from ..protocol import make_unsolicited
from .transport import PERSISTENT

LOG = logging.getLogger("cloudmanagers_plugin.agent.events")

EventListener = Callable[[str, Dict[str, Any]], None]
ReconcileListener = Callable[[str, Views], None]
SectionsListener = Callable[[List[str]], None]
MAX_REPUBLISH_DELAY = 30.0
JOIN_TIMEOUT = 10.0


class _Outgoing:
    """One unsolicited message on its way to the broker, until it is confirmed."""

    __slots__ = ("body", "properties", "confirmed", "failures")

    def __init__(self, body: bytes, properties: BasicProperties, confirmed: Optional[Callable[[], None]]) -> None:
        self.body = body
        self.properties = properties
        self.confirmed = confirmed
        self.failures = 0


class ChangeFeed:
    """Change events of every valid section, and the hooks other event sources build on.

    ``attach`` gives it the transport (before ``start``); ``stop`` asks the threads to end (safe
    from a signal handler); ``close`` waits for them and saves the confirmed states (after the
    I/O loop ended, so every confirm the broker sent is counted).
    """

    def __init__(self, source: ViewSource, collection: str, store: TrackerStore, agent_uuid: str,
                 address: Tuple[str, str], user_id: Optional[str], poll_interval: float,
                 reconcile_interval: float) -> None:
        self._source = source
        self._collection = collection
        self._store = store
        self._agent_uuid = agent_uuid
        self._exchange, self._routing_key = address
        self._user_id = user_id
        self.poll_interval = poll_interval
        self.reconcile_interval = reconcile_interval
        self._watchers: Dict[str, SectionWatcher] = {}
        self._lock = threading.Lock()
        self._listeners: List[EventListener] = []
        self._reconcile_listeners: List[ReconcileListener] = []
        self._sections_listeners: List[SectionsListener] = []
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="events", daemon=True)
        self._consumer: Any = None
        self._ioloop: Any = None
        self._section_error = ""

    # -- the interface for other event sources -----------------------------------------------

    def refresh_vm(self, section: str, vm_id: str) -> None:
        """Read one VM now (ONE request, on the section's thread) and publish what changed; a VM
        that is gone (404) is deleted. Any thread; returns at once."""
        with self._lock:
            watcher = self._watchers.get(section)
        if watcher is None:
            LOG.debug("events: refresh of VM %s in '%s' ignored: the section is not watched", vm_id, section)
            return
        watcher.refresh(vm_id)

    def subscribe(self, listener: EventListener) -> None:
        """Call ``listener(section, event_status)`` after each event (on the section's thread)."""
        self._listeners.append(listener)

    def on_reconcile(self, listener: ReconcileListener) -> None:
        """Call ``listener(section, views_by_vm_id)`` after each full reconcile (on the section's thread)."""
        self._reconcile_listeners.append(listener)

    def on_sections(self, listener: SectionsListener) -> None:
        """Call ``listener(sections)`` with the sections watched after each reading of the cloud
        managers file (at start, then every poll interval, on the supervisor thread), so another
        source follows the file as the polling does; not when the file cannot be read: what
        follows it keeps what it has, as the watchers do."""
        self._sections_listeners.append(listener)

    def publish(self, section: str, msg_type: str, status: Dict[str, Any],
                extra: Optional[Dict[str, Any]] = None) -> None:
        """Publish an unsolicited message about ``section`` (any thread): ``{uuid, resource_id, collection,
        msg_type, status, version}`` plus ``extra`` keys, to the events' exchange, confirmed, sent again
        until the broker confirms it (while the agent runs)."""
        self._send(section, msg_type, status, extra or {}, None, None)

    # -- life cycle ------------------------------------------------------------------------------

    def attach(self, consumer: Any, ioloop: Any) -> None:
        """Publish through ``consumer.publish_unsolicited`` on ``ioloop``'s thread."""
        self._consumer, self._ioloop = consumer, ioloop

    def start(self) -> None:
        self._supervisor.start()

    def stop(self) -> None:
        """Stop polling (any thread, never blocks); events already handed over are still published."""
        self._stopping.set()
        with self._lock:
            watchers = list(self._watchers.values())
        for watcher in watchers:
            watcher.stop()

    def close(self) -> None:
        """Wait for the threads (bounded) and save every section's confirmed state."""
        self.stop()
        deadline = time.monotonic() + JOIN_TIMEOUT  # for all of them: a cloud that hangs holds no one else
        if self._supervisor.is_alive():
            self._supervisor.join(JOIN_TIMEOUT)
        with self._lock:
            watchers = list(self._watchers.values())
        for watcher in watchers:
            watcher.join(max(0.0, deadline - time.monotonic()))
            watcher.save()

    def reconciles(self, section: str) -> int:
        """How many full lists of ``section`` completed (0: its events do not flow yet)."""
        with self._lock:
            watcher = self._watchers.get(section)
        return watcher.reconciles if watcher is not None else 0

    @property
    def sections(self) -> List[str]:
        """The sections watched now."""
        with self._lock:
            return sorted(self._watchers)

    def _supervise(self) -> None:
        """Watch the valid sections of the cloud managers file as it is now (checked every poll interval)."""
        while not self._stopping.is_set():
            self._follow_sections()
            self._stopping.wait(self.poll_interval)

    def _follow_sections(self) -> None:
        try:
            wanted = set(self._source.event_sections())
        except CloudManagerError as err:
            if str(err) != self._section_error:
                LOG.warning("events: cannot read the cloud managers file (%s); watching the sections as they were", err)
            self._section_error = str(err)
            return
        self._section_error = ""
        with self._lock:
            if self._stopping.is_set():
                return
            for section in sorted(wanted - set(self._watchers)):
                tracker = ChangeTracker(section, self._store.load(section))
                watcher = SectionWatcher(self, SectionPoller(section, self._source, tracker), self._store)
                self._watchers[section] = watcher
                watcher.start()
            gone = [self._watchers.pop(section) for section in sorted(set(self._watchers) - wanted)]
        for watcher in gone:
            LOG.info("events: section '%s' is no longer in the cloud managers file; not watched any more",
                     watcher.section)
            watcher.stop()
        for listener in self._sections_listeners:
            try:
                listener(sorted(wanted))
            except Exception:  # a listener's bug must not stop the polling's supervision
                LOG.exception("events: a listener of the sections failed")

    # -- publishing ------------------------------------------------------------------------------

    def emit(self, section: str, event: Dict[str, Any], confirmed: Callable[[], None]) -> None:
        """Publish one change event (``confirmed()`` runs on the I/O thread once the broker confirmed
        it), then tell the listeners."""
        sequence = event["sequence"]
        self._send(section, "status", event, {}, confirmed, f"{section}/{sequence}")
        for listener in self._listeners:
            try:
                listener(section, event)
            except Exception:  # a listener's bug must not stop the feed
                LOG.exception("events: a listener failed on event %s of '%s'", sequence, section)

    def reconciled(self, section: str, views: Views) -> None:
        for listener in self._reconcile_listeners:
            try:
                listener(section, views)
            except Exception:
                LOG.exception("events: a reconcile listener failed for '%s'", section)

    def _send(self, section: str, msg_type: str, status: Dict[str, Any], extra: Dict[str, Any],
              confirmed: Optional[Callable[[], None]], message_id: Optional[str]) -> None:
        message = make_unsolicited(self._agent_uuid, section, self._collection, msg_type, status, **extra)
        properties = BasicProperties(content_type="application/json", delivery_mode=PERSISTENT, user_id=self._user_id,
                                     timestamp=int(time.time()), message_id=message_id)
        outgoing = _Outgoing(json.dumps(message).encode("utf-8"), properties, confirmed)
        if self._ioloop is None:
            LOG.error("events: no transport attached; %s message of '%s' not sent", msg_type, section)
            return
        self._ioloop.add_callback_threadsafe(lambda: self._publish_now(outgoing))

    def _publish_now(self, outgoing: _Outgoing) -> None:
        """I/O thread."""
        self._consumer.publish_unsolicited(self._exchange, self._routing_key, outgoing.properties, outgoing.body,
                                           lambda failure: self._settled(outgoing, failure))

    def _settled(self, outgoing: _Outgoing, failure: str) -> None:
        """I/O thread: confirmed, or published again after a back-off (not once the agent stops:
        an unconfirmed event is derived again from the saved state at the next start)."""
        if not failure:
            if outgoing.confirmed is not None:
                outgoing.confirmed()
            return
        outgoing.failures += 1
        if self._stopping.is_set():
            LOG.info("events: message %s not confirmed before the stop (%s)", outgoing.properties.message_id or "",
                     failure)
            return
        delay = min(MAX_REPUBLISH_DELAY, 2.0 ** (outgoing.failures - 1))
        log = LOG.warning if outgoing.failures == 1 else LOG.debug
        log("events: message to exchange '%s' not confirmed (%s); sending it again in %g s",
            self._exchange, failure, delay)
        self._ioloop.call_later(delay, lambda: self._publish_now(outgoing))


class SectionWatcher:
    """The thread of one section: polls, reconciles, single reads; saves the confirmed state."""

    def __init__(self, feed: ChangeFeed, poller: SectionPoller, store: TrackerStore) -> None:
        self.section = poller.section
        self._feed = feed
        self._poller = poller
        self._tracker = poller.tracker
        self._store = store
        self._inbox: "queue.Queue[Tuple[str, Optional[str]]]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"events-{self.section}", daemon=True)
        self._failing: Dict[str, str] = {}  # step -> the error it keeps failing with
        self.reconciles = 0
        self._save_error = ""

    def start(self) -> None:
        self._thread.start()

    def refresh(self, vm_id: str) -> None:
        self._inbox.put(("refresh", vm_id))

    def stop(self) -> None:
        self._inbox.put(("stop", None))

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        now = time.monotonic()
        next_reconcile, next_poll = now, now + self._feed.poll_interval
        while True:
            refreshes, stop = self._wait(min(next_reconcile, next_poll))
            if stop:
                break
            for vm_id in refreshes:
                self._step("read VM", lambda vm_id=vm_id: self._events(self._poller.refresh(vm_id)))
            now = time.monotonic()
            if now >= next_reconcile:
                done = self._step("reconcile", self._reconcile)
                next_reconcile = now + (self._feed.reconcile_interval if done else self._feed.poll_interval)
                next_poll = now + self._feed.poll_interval
            elif now >= next_poll:
                if not self._step("poll", lambda: self._events(self._poller.poll())):
                    next_reconcile = now + self._feed.poll_interval  # a failing delta poll: list everything
                next_poll = max(next_poll + self._feed.poll_interval, now)
            self.save()
        self.save()

    def _wait(self, due: float) -> Tuple[List[str], bool]:
        """Block until ``due`` or a request (a VM to read, a state to save, stop); return the VMs to
        read (each once) and whether to stop."""
        try:
            items = [self._inbox.get(timeout=max(0.0, due - time.monotonic()))]
        except queue.Empty:
            return [], False
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        refreshes = list(dict.fromkeys(vm_id for kind, vm_id in items if kind == "refresh" and vm_id))
        return refreshes, any(kind == "stop" for kind, _ in items)

    def _events(self, events: Any) -> None:
        found = [event for event in (events if isinstance(events, list) else [events]) if event is not None]
        if found:
            self.save()  # their numbers are issued: never again, even after a crash
        for event in found:
            sequence = event["sequence"]
            self._feed.emit(self.section, event, lambda sequence=sequence: self._confirmed(sequence))

    def _confirmed(self, sequence: int) -> None:
        """I/O thread: the broker confirmed event ``sequence``; the thread saves the state (off the I/O thread)."""
        self._tracker.confirm(sequence)
        self._inbox.put(("save", None))

    def _reconcile(self) -> None:
        events, views = self._poller.reconcile()
        self._events(events)
        self.reconciles += 1
        self._feed.reconciled(self.section, views)

    def _step(self, name: str, run: Callable[[], None]) -> bool:
        """Run one step; a failure is logged when it starts and when it ends, not at every interval."""
        try:
            run()
        except CloudManagerError as err:
            if self._failing.get(name) != str(err):
                LOG.warning("events of '%s': %s failed: %s; trying again in %g s", self.section, name, err,
                            self._feed.poll_interval)
            self._failing[name] = str(err)
            return False
        except Exception:  # a bug must not end the section's events
            LOG.exception("events of '%s': %s failed", self.section, name)
            return False
        if self._failing.pop(name, None) is not None:
            LOG.info("events of '%s': %s works again", self.section, name)
        return True

    def save(self) -> None:
        """Save the confirmed state if it moved (a failure is logged once; events keep flowing)."""
        state = self._tracker.snapshot(only_if_changed=True)
        if state is None:
            return
        try:
            self._store.save(self.section, state)
        except OSError as err:
            if not self._save_error:
                LOG.warning("events of '%s': cannot save the state in %s (%s): after a restart, what changed "
                            "meanwhile is reported again", self.section, self._store.directory,
                            err.strerror or err)
            self._save_error = str(err)
            self._tracker.mark_unsaved()
            return
        self._save_error = ""
