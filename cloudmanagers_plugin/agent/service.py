"""One agent run: the parts wired together, the IOLoop, a graceful stop on SIGTERM/SIGINT, and
systemd's readiness protocol (the ``cloudmanagers agent`` command is agent/command.py).

systemd (``Type=notify``) passes a datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name``
for the abstract namespace); ``READY=1`` sent there tells it the service is up, so units ordered
after the agent and ``systemctl start`` wait until the agent really consumes. Outside systemd
it does nothing; no dependency is needed for one datagram.
"""

import logging
import os
import signal
import socket
from typing import Any, Optional, Tuple

from pika.adapters.select_connection import IOLoop

from ..changes import TrackerStore
from ..errors import ConfigError
from ..polling import ViewSource
from ..version import __version__
from .admission import Gate, HostFilter, Permissions, legacy_zone
from .broker import connection_parameters, login_user_id
from .compliance import compliance_monitor
from .events import ChangeFeed
from .execution import AnswerCache, Dispatcher, OrderedPool, cached_weight
from .metrics import AgentMetrics, MetricsServer
from .notifications import notification_service
from .settings import METRICS_OPTION, AgentSettings, queue_arguments, safe_summary
from .status import DISCONNECTED, AgentStatus
from .transport import Backoff, Consumer, Topology

LOG = logging.getLogger("cloudmanagers_plugin.agent")
# Requests the broker may hand over before the first is acked, per worker: with one, a worker
# that finishes waits a broker round trip (ack out, next request in) before it has work again.
PREFETCH_PER_WORKER = 2


class AgentService:
    """Serves ``controller`` (an object with ``__resource__`` and ``process``) over AMQP.

    ``status`` (agent/status.py) says the agent's role in its group, the broker node in use and
    its reconnects, redeliveries and abandoned requests; ``metrics`` (agent/metrics.py) serves
    them with the request and OpenStack counters on ``/metrics`` and ``/healthz``. Pass the
    ``metrics`` the controller's drivers report to, if any.

    ``settings.uuid`` must already be resolved. Everything that can be wrong in the settings
    (TLS files, permissions file, a metrics address in use) fails here, in the constructor,
    before any connection.
    """

    def __init__(self, settings: AgentSettings, controller: Any, metrics: Optional[AgentMetrics] = None) -> None:
        agent_uuid = settings.uuid
        permissions = Permissions.load(settings.permissions) if settings.permissions else None
        parameters = connection_parameters(settings.broker, f"cloudmanagers-agent {agent_uuid}")
        self._ioloop = IOLoop()
        self._pool = OrderedPool(settings.workers)
        gate = Gate(
            agent_uuid, controller.__resource__, HostFilter(agent_uuid), permissions,
            settings.max_request_age, legacy_zone(settings.legacy_timestamp_zone),
        )
        topology = Topology(
            queue=agent_uuid,
            exchange=settings.exchange,
            declare=settings.declare,
            prefetch=PREFETCH_PER_WORKER * settings.workers,
            publish_exchange=settings.publish_exchange,
            publish_routing_key=settings.publish_routing_key,
            user_id=login_user_id(settings.broker),
            queue_arguments=queue_arguments(settings),
            reply_exchanges=settings.allowed_reply_exchanges,
            delivery_limit=settings.delivery_limit if settings.queue_type == "quorum" else 0,
        )
        self.status = AgentStatus(single_active=settings.single_active)
        if settings.single_active:
            self.status.on_role_change(lambda role: _log_role(role, agent_uuid))
        self.metrics = metrics or AgentMetrics()
        self.metrics.attach(self.status)
        backoff = Backoff(settings.broker.retry_delay, settings.broker.connection_attempts)
        self._consumer = Consumer(
            parameters, topology, self._ioloop, backoff, settings.broker,
            on_consuming=lambda: notify(f"READY=1\nSTATUS=consuming from queue {agent_uuid}"),
            status=self.status,
            metrics=self.metrics,
        )
        self._dispatcher = Dispatcher(
            gate, controller, self._pool,
            AnswerCache(settings.reply_cache_size, settings.reply_cache_bytes, cached_weight),
            self._ioloop.add_callback_threadsafe, settings.max_message_bytes, self._consumer,
            topology.delivery_limit, self._count_abandoned,
        )
        self.feed = _change_feed(settings, controller, self._consumer, self._ioloop)
        address = settings.metrics_address
        self._metrics_server = MetricsServer(self.metrics, address, METRICS_OPTION) if address else None
        # the feed's fast source (Nova's notifications) and its compliance reader: both need the feed
        self._notifications = notification_service(agent_uuid, controller, self.feed) if self.feed else None
        self._compliance = compliance_monitor(controller, self.feed, settings.alert_interval) if self.feed else None
        LOG.info("cloudmanagers agent %s (uuid %s) starting: %s", __version__, agent_uuid, safe_summary(settings))

    def _count_abandoned(self) -> None:
        self.status.abandoned += 1

    @property
    def metrics_address(self) -> Optional[Tuple[str, int]]:
        """Where /metrics and /healthz are served (the bound port), or None when disabled."""
        return self._metrics_server.address if self._metrics_server else None

    def run(self) -> int:
        """Serve until stopped; return the exit code (0 after a requested stop)."""
        if self._metrics_server:
            self._metrics_server.start()
            LOG.info("metrics on http://%s:%d/metrics, health on /healthz", *self.metrics_address)
        try:
            if self.feed is not None:
                self.feed.start()
            self._consumer.start(self._dispatcher)
            self._ioloop.start()
            if self._notifications is not None:
                self._notifications.stop()
            if self.feed is not None:
                self.feed.close()
            if self._compliance is not None:
                self._compliance.close()
            self._pool.shutdown()
            self._ioloop.close()
        finally:
            if self._metrics_server:
                self._metrics_server.stop()
        return self._consumer.exit_code

    def request_stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        notify("STOPPING=1")
        if self.feed is not None:
            self.feed.stop()
        self._ioloop.add_callback_threadsafe(self._consumer.stop)

    def run_until_signalled(self) -> int:
        """``run()`` with SIGTERM and SIGINT mapped to a graceful stop (main thread only)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, lambda _number, _frame: self.request_stop())
        try:
            return self.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _change_feed(settings: AgentSettings, controller: Any, consumer: Consumer, ioloop: IOLoop) -> Optional[ChangeFeed]:
    """The change events of the controller's sections, unless ``[events] enabled = false``, they have
    nowhere to go, or the controller has no sections to watch (a test double)."""
    if not settings.events_enabled or not isinstance(controller, ViewSource):
        return None
    exchange, routing_key = settings.events_address
    if not exchange and not routing_key:  # the default exchange with no queue name: the broker drops them
        LOG.warning("change events are off: no exchange and no routing key to publish them to ([events] exchange and "
                    "routing_key, and [rabbitmq] publish_exchange and publish_routing_key, are empty)")
        return None
    _writable_folder(settings.state_dir)
    feed = ChangeFeed(controller, controller.__resource__, TrackerStore(settings.state_dir), settings.uuid,
                      (exchange, routing_key), login_user_id(settings.broker), settings.poll_interval,
                      settings.reconcile_interval)
    feed.attach(consumer, ioloop)
    return feed


def _writable_folder(path: str) -> None:
    """The state folder must be writable now, not at the first event."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"[agent] state_dir = {path}: cannot create it ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"[agent] state_dir = {path}: not writable by this user")


def _log_role(role: str, queue: str) -> None:
    """Which agent of a single-active group works, in the log as it changes (a lost connection
    is logged by the transport already)."""
    if role != DISCONNECTED:
        LOG.info("%s in the group of queue %s", role, queue)


# -- systemd ------------------------------------------------------------------------------------


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=consuming"``) to systemd; False when not under it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as err:
        LOG.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), err.strerror or err)
        return False
    return True
