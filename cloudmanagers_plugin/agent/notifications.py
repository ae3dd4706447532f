"""Nova's versioned notifications: the fast source of change events.

A section that names its cloud's message bus (``notifications_url``) gets a listener: its own
pika connection to that bus, its own exclusive, auto-deleted queue bound to Nova's exchange
(``notifications_exchange``, oslo.messaging's ``control_exchange``, ``nova`` by default) with
the routing key ``versioned_notifications.*``. The cloud's shared
``versioned_notifications.info`` queue belongs to the cloud's own consumers (Ceilometer...)
and is never read here. The listeners follow the cloud managers file as the polling does, at
each of the change feed's readings of it: a section that comes with a bus, or whose bus is added,
gets a listener; one removed, or whose bus is removed or changes, has its listener stopped (and a
new one on the new bus).

A notification is only a hint that a VM changed: the listener takes the VM's uuid out of the
oslo envelope and asks the change feed to read that VM (one Nova GET, which the feed queues on
the section's own thread, so nothing here waits for Nova), and the
feed's tracker compares with what it already published, so a change seen by both the
notifications and the polling gives one event. A resize emits a dozen notifications in a
second: the hints of one VM are coalesced, one read per burst window, and a hint that arrives
while the VM is being read gives one more read after it, so the last state is always read.

When the bus cannot be reached (or refuses the login, or has no such exchange yet) one warning
says so, polling carries on alone, and the listener retries with back-off; once it consumes
again an info line says so and events are fast again, without a restart. The bodies carry
the user's token (``_context_auth_token``): they are never logged.
"""

import json
import logging
import threading
import time
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

import pika
from pika.adapters.select_connection import IOLoop

from ..config import ConfigFile
from ..errors import CloudManagerError, ConfigError
from ..transport_url import TransportUrl
from ..values import printable
from .broker import explain_connection_failure, verifying_context
from .settings import BrokerSettings
from .transport import Backoff

LOG = logging.getLogger(__name__)

ROUTING_KEY = "versioned_notifications.*"  # every priority of oslo's versioned topic
COALESCE_SECONDS = 0.15  # one read per VM per burst window
RETRY_CAP_SECONDS = 60.0
HEARTBEAT_SECONDS = 30
CLOSE_SECONDS = 2.0  # how long a stop waits for the bus connections to close
RESYNC_SECONDS = 0.05  # a section whose bus changed: how often to look whether the old connection closed

Hint = Tuple[str, str, Optional[str]]  # (event type, VM uuid, project id)
Later = Callable[[float, Callable[[], None]], None]  # thread-safe "run this after a delay"
Bus = Tuple[TransportUrl, str]  # a section's bus and Nova's exchange on it


def parse_notification(body: bytes) -> Optional[Hint]:
    """The event type, VM uuid and project of an ``instance.*`` notification; None for any other.

    oslo.messaging's messagingv2 driver wraps the message as a JSON string in
    ``{"oslo.version": "2.0", "oslo.message": "..."}``; an unwrapped message (the older
    ``messaging`` driver) is read as it is. A versioned payload keeps its fields under the
    literal key ``nova_object.data``.
    """
    try:
        message = json.loads(body)
        if isinstance(message, dict) and isinstance(message.get("oslo.message"), str):
            message = json.loads(message["oslo.message"])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict):
        return None
    event_type = message.get("event_type")
    payload = message.get("payload")
    if not (isinstance(event_type, str) and event_type.startswith("instance.") and isinstance(payload, dict)):
        return None
    data = payload.get("nova_object.data")
    if not isinstance(data, dict) or not isinstance(data.get("uuid"), str) or not data["uuid"]:
        return None
    project = data.get("tenant_id")
    return event_type, data["uuid"], project if isinstance(project, str) else None


class Coalescer:
    """At most one read per key per window, and always one read after the last hint (thread-safe).

    A key is idle, scheduled (a read starts when the window ends), running, or running with a
    hint that came meanwhile ("dirty": the read may have missed it, so another is scheduled
    when it ends). ``submit`` runs a read (inline when ``read`` returns at once, as the feed's
    queued read does; on a pool when it blocks).
    """

    SCHEDULED, RUNNING, DIRTY = "scheduled", "running", "dirty"

    def __init__(self, window: float, later: Later, read: Callable[[Hashable], None],
                 submit: Callable[[Callable[[], None]], Any] = lambda run: run()) -> None:
        self._window = window
        self._later = later
        self._read = read
        self._submit = submit
        self._lock = threading.Lock()
        self._keys: Dict[Hashable, str] = {}

    def hint(self, key: Hashable) -> None:
        with self._lock:
            state = self._keys.get(key)
            if state == self.RUNNING:
                self._keys[key] = self.DIRTY
            if state is not None:
                return
            self._keys[key] = self.SCHEDULED
        self._later(self._window, lambda: self._start(key))

    def _start(self, key: Hashable) -> None:
        with self._lock:
            self._keys[key] = self.RUNNING
        self._submit(lambda: self._run(key))

    def _run(self, key: Hashable) -> None:
        try:
            self._read(key)
        except Exception:  # a failed read must not wedge the key: the next hint or poll reads again
            LOG.exception("reading a VM after a notification failed")
        with self._lock:
            again = self._keys[key] == self.DIRTY
            if again:
                self._keys[key] = self.SCHEDULED
            else:
                del self._keys[key]
        if again:
            self._later(self._window, lambda: self._start(key))

    @property
    def pending(self) -> int:
        """Keys scheduled or being read (for tests and the bench)."""
        with self._lock:
            return len(self._keys)


class NotificationListener:
    """One section's consumer on its cloud's bus (its loop's thread only, but ``hint`` targets
    are thread-safe). Reconnects with back-off until ``stop``."""

    def __init__(self, section: str, url: TransportUrl, exchange: str, queue: str, ioloop: IOLoop,
                 connection_name: str, on_hint: Callable[[str, Hint], None]) -> None:
        self.section = section
        self._url = url
        self._exchange = exchange
        self._queue = queue
        self._ioloop = ioloop
        self._connection_name = connection_name
        self._on_hint = on_hint
        self._connection: Any = None
        self._broker_index = 0
        self._backoff = Backoff(RETRY_CAP_SECONDS, None)
        self._timer: Any = None
        self._stopping = False
        self._step = ""
        self._close_reason = ""  # why the channel closed, for the connection's close that follows
        self.consuming = False

    # -- life cycle (loop thread) -------------------------------------------------------------

    def start(self) -> None:
        self._timer = None
        broker = self._url.brokers[self._broker_index % len(self._url.brokers)]
        self._broker_index += 1
        settings = BrokerSettings(host=broker.host, port=broker.port, ssl_port=broker.port, vhost=self._url.vhost,
                                  username=broker.username, password=broker.password, use_ssl=self._url.use_ssl)
        self._step = f"connect to {broker.host}:{broker.port}"
        try:
            ssl_options = self._ssl_options(broker.host)
        except ConfigError as err:  # the CA file went away since the file was read: retried like an outage
            self._failed(str(err))
            return
        parameters = pika.ConnectionParameters(
            host=broker.host, port=broker.port, virtual_host=self._url.vhost,
            credentials=pika.PlainCredentials(broker.username, broker.password),
            ssl_options=ssl_options, heartbeat=HEARTBEAT_SECONDS, connection_attempts=1,
            client_properties={"connection_name": self._connection_name},
        )
        ca_option = ("notifications_cacert (or cacert)" if self._url.ca_file
                     else "notifications_cacert (none is set, so the system's CAs were used)")
        self._connection = pika.SelectConnection(
            parameters, on_open_callback=self._on_open,
            on_open_error_callback=lambda _c, error: self._failed(
                explain_connection_failure(error, settings, ca_option=ca_option,
                                           options="notifications_url's").reason),
            on_close_callback=self._on_closed, custom_ioloop=self._ioloop,
        )

    def _ssl_options(self, host: str) -> Optional[pika.SSLOptions]:
        """TLS verified against the section's bus CA (the system's CAs when it names none), host name
        checked; None for a plain bus."""
        if not self._url.use_ssl:
            return None
        where = f"section [{self.section}]: the bus CA bundle (notifications_cacert or cacert)"
        return pika.SSLOptions(verifying_context(self._url.ca_file, where), host)

    def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._ioloop.remove_timeout(self._timer)
            self._timer = None
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    @property
    def closed(self) -> bool:
        return self._connection is None or self._connection.is_closed

    @property
    def bus(self) -> Bus:
        return self._url, self._exchange

    # -- AMQP steps ----------------------------------------------------------------------------

    def _on_open(self, connection: Any) -> None:
        if self._stopping:  # stopped while it connected
            connection.close()
            return
        self._step = "open a channel"
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        self._step = f"declare the queue {self._queue}"
        channel.queue_declare(self._queue, exclusive=True, auto_delete=True,
                              callback=lambda _frame: self._bind(channel))

    def _bind(self, channel: Any) -> None:
        self._step = f"bind to the exchange '{self._exchange}'"
        channel.queue_bind(self._queue, self._exchange, routing_key=ROUTING_KEY,
                           callback=lambda _frame: self._consume(channel))

    def _consume(self, channel: Any) -> None:
        self._step = "consume"
        channel.basic_consume(self._queue, self._on_message, auto_ack=True,
                              callback=lambda _frame: self._on_consuming())

    def _on_consuming(self) -> None:
        self.consuming = True
        again = " again" if self._backoff.failures else ""
        self._backoff.reset()
        LOG.info("section '%s': listening%s to Nova's notifications on %s (exchange '%s'): changes come at once",
                 self.section, again, self._url.masked, self._exchange)

    def _on_message(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        hint = parse_notification(body)
        if hint is not None and not self._stopping:
            self._on_hint(self.section, hint)

    # -- failures ------------------------------------------------------------------------------

    def _on_channel_closed(self, _channel: Any, reason: Exception) -> None:
        if self._connection is not None and self._connection.is_open:
            self._close_reason = f"could not {self._step}: {printable(getattr(reason, 'reply_text', reason))}"
            self._connection.close()

    def _on_closed(self, _connection: Any, reason: Exception) -> None:
        why = self._close_reason or f"connection closed ({printable(reason)})"
        self._close_reason = ""
        self._failed(why)

    def _failed(self, reason: str) -> None:
        self._connection = None
        self.consuming = False
        if self._stopping:
            return
        delay = self._backoff.next_delay()
        if self._backoff.failures == 1:
            LOG.warning("section '%s': Nova's notifications are unavailable from %s (%s); polling carries on "
                        "alone, retrying with back-off", self.section, self._url.masked, reason)
        else:
            LOG.debug("section '%s': notifications still unavailable (%s); retrying in %g s",
                      self.section, reason, delay)
        self._timer = self._ioloop.call_later(delay, self.start)


class NotificationService:
    """Every section's listener on one IOLoop thread of its own (never the agent's I/O thread),
    for the sections and buses ``follow`` last gave.

    ``refresh(section, vm_id)`` is the change feed's read of one VM, which must return at once (the
    feed queues it); ``project_of(section)`` the project id whose VMs the section sees (None while
    unknown: then no hint is filtered), so a VM of another project on the same bus costs no read.
    """

    def __init__(self, agent_uuid: str, refresh: Callable[[str, str], None],
                 project_of: Callable[[str], Optional[str]], window: float = COALESCE_SECONDS) -> None:
        self._agent_uuid = agent_uuid
        self._ioloop = IOLoop()
        self._refresh = refresh
        self._project_of = project_of
        self._projects: Dict[str, Optional[str]] = {}
        self._coalescer = Coalescer(window, self._later, self._read)
        # the loop thread's own: what follow asked last, the listeners of it, those stopped and still closing
        self._wanted: Dict[str, Bus] = {}
        self._listeners: Dict[str, NotificationListener] = {}
        self._retiring: List[NotificationListener] = []
        self._sync_timer: Any = None
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="notifications", daemon=True)

    @property
    def listeners(self) -> List[NotificationListener]:
        """The listeners of the sections followed now (stopped ones not included)."""
        return list(self._listeners.values())

    def follow(self, buses: Dict[str, Bus]) -> None:
        """Listen to the bus of each section of ``buses`` (section -> (URL, exchange)), and of no
        other: a section new here gets a listener; one gone, or whose URL or exchange changed, has its
        listener stopped (its connection closed, so its exclusive queue goes) and, if changed, a new
        one once the old connection closed. Any thread; returns at once. The loop's thread starts
        with the first bus."""
        with self._lock:
            started = self._thread.ident is not None
            if self._stopped or not (buses or started):
                return
            wanted = dict(buses)
            self._ioloop.add_callback_threadsafe(lambda: self._follow(wanted))
            if not started:
                self._thread.start()

    def stop(self) -> None:
        """Close every connection and end the loop's thread; ``follow`` does nothing after it."""
        with self._lock:
            self._stopped = True
        if self._thread.is_alive():
            self._ioloop.add_callback_threadsafe(self._close_all)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        self._ioloop.start()
        self._ioloop.close()

    # -- following the sections (loop thread) ---------------------------------------------------

    def _follow(self, wanted: Dict[str, Bus]) -> None:
        self._wanted = wanted
        self._sync()

    def _sync(self) -> None:
        """Stop the listeners ``_wanted`` no longer has as they are, start those it lacks; a section
        whose previous listener still closes waits for it (its exclusive queue has the same name)."""
        self._sync_timer = None
        self._retiring = [listener for listener in self._retiring if not listener.closed]
        for section, listener in list(self._listeners.items()):
            bus = self._wanted.get(section)
            if bus != listener.bus:
                self._retire(section, "its notifications_url or notifications_exchange changed" if bus else
                             "no longer in the cloud managers file with a notifications_url")
        closing = {listener.section for listener in self._retiring}
        new = [section for section in sorted(self._wanted) if section not in set(self._listeners) | closing]
        for section in new:
            url, exchange = self._wanted[section]
            listener = NotificationListener(section, url, exchange,
                                            f"cloudmanagers-agent.{self._agent_uuid}.{section}"[:255], self._ioloop,
                                            f"cloudmanagers-agent {self._agent_uuid} notifications {section}",
                                            self._hint)
            self._listeners[section] = listener
            listener.start()
        if new:
            threading.Thread(target=self._learn_projects, args=(new,), name="notifications-projects",
                             daemon=True).start()
        if closing & (set(self._wanted) - set(self._listeners)):
            self._sync_timer = self._ioloop.call_later(RESYNC_SECONDS, self._sync)

    def _retire(self, section: str, why: str) -> None:
        listener = self._listeners.pop(section)
        self._projects.pop(section, None)
        url, exchange = listener.bus
        LOG.info("section '%s': no longer listening to Nova's notifications on %s (exchange '%s'): %s",
                 section, url.masked, exchange, why)
        listener.stop()
        self._retiring.append(listener)

    def _close_all(self) -> None:
        if self._sync_timer is not None:
            self._ioloop.remove_timeout(self._sync_timer)
            self._sync_timer = None
        for listener in self._listeners.values():
            listener.stop()
        self._wait_closed(time.monotonic() + CLOSE_SECONDS)

    def _wait_closed(self, deadline: float) -> None:
        """Stop the loop once every connection closed, or at ``deadline``: pika cannot abort an
        attempt still connecting (a bus that does not answer), which the stopping process drops."""
        everyone = list(self._listeners.values()) + self._retiring
        if all(listener.closed for listener in everyone) or time.monotonic() > deadline:
            self._ioloop.stop()
        else:
            self._ioloop.call_later(0.05, lambda: self._wait_closed(deadline))

    # -- hints ----------------------------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        self._ioloop.add_callback_threadsafe(lambda: self._ioloop.call_later(delay, callback))

    def _learn_projects(self, sections: List[str]) -> None:
        for section in sections:
            try:
                self._projects[section] = self._project_of(section)
            except Exception as err:  # unknown for now: hints of that section are not filtered
                LOG.debug("section '%s': project id unknown (%s)", section, err)

    def _hint(self, section: str, hint: Hint) -> None:
        _event_type, vm_id, project = hint
        mine = self._projects.get(section)
        if mine and project and project != mine:
            return
        self._coalescer.hint((section, vm_id))

    def _read(self, key: Hashable) -> None:
        section, vm_id = key  # type: ignore[misc]
        self._refresh(section, vm_id)


def notification_service(agent_uuid: str, controller: Any, feed: Any) -> NotificationService:
    """The listeners of the sections that name their cloud's bus, feeding ``feed.refresh_vm``; they
    follow the cloud managers file at each of the feed's readings of it (at start, then every poll
    interval), as the polling does."""
    service = NotificationService(agent_uuid, feed.refresh_vm, lambda name: controller.driver(name).project_id())

    def follow(sections: List[str]) -> None:
        try:
            found = buses(controller.config, sections)
        except CloudManagerError:  # unreadable since the feed read it: its next reading says so
            return
        service.follow(found)

    feed.on_sections(follow)
    return service


def buses(config: ConfigFile, sections: List[str]) -> Dict[str, Bus]:
    """The bus of each of ``sections`` (the valid ones the feed just read) that names one."""
    found = {}
    for name, section in config.all().items():
        if name in sections and not isinstance(section, CloudManagerError) and section.notifications_url is not None:
            found[name] = (section.notifications_url, section.notifications_exchange)
    return found
