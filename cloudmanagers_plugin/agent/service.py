"""One agent run: the parts wired together, the IOLoop, and a graceful stop on SIGTERM/SIGINT."""

import logging
import signal
from typing import Any

from pika.adapters.select_connection import IOLoop

from ..version import __version__
from .broker import connection_parameters, login_user_id
from .consumer import Backoff, Consumer, Topology
from .dedup import AnswerCache
from .dispatcher import Dispatcher, cached_weight
from .filters import HostFilter
from .gate import Gate
from .handback import Handback
from .ordered_pool import OrderedPool
from .permissions import Permissions
from .sdnotify import notify
from .settings import AgentSettings, safe_summary
from .timestamps import legacy_zone

LOG = logging.getLogger("cloudmanagers_plugin.agent")


class AgentService:
    """Serves ``controller`` (an object with ``__resource__`` and ``process``) over AMQP.

    ``settings.uuid`` must already be resolved. Everything that can be wrong in the settings
    (TLS files, permissions file) fails here, in the constructor, before any connection.
    """

    def __init__(self, settings: AgentSettings, controller: Any) -> None:
        agent_uuid = settings.uuid
        permissions = Permissions.load(settings.permissions) if settings.permissions else None
        parameters = connection_parameters(settings.broker, f"cloudmanagers-agent {agent_uuid}")
        self._ioloop = IOLoop()
        self._pool = OrderedPool(settings.workers)
        gate = Gate(
            agent_uuid, controller.__resource__, HostFilter(agent_uuid), permissions,
            settings.max_request_age, legacy_zone(settings.legacy_timestamp_zone),
        )
        dispatcher = Dispatcher(
            gate, controller, self._pool,
            AnswerCache(settings.reply_cache_size, settings.reply_cache_bytes, cached_weight),
            Handback(self._ioloop.add_callback_threadsafe).post,
            settings.max_message_bytes,
        )
        topology = Topology(
            queue=agent_uuid,
            exchange=settings.exchange,
            declare=settings.declare,
            prefetch=settings.workers,
            publish_exchange=settings.publish_exchange,
            publish_routing_key=settings.publish_routing_key,
            user_id=login_user_id(settings.broker),
            queue_arguments={"x-expires": int(settings.queue_expires * 1000)} if settings.queue_expires else {},
            reply_exchanges=settings.allowed_reply_exchanges,
        )
        backoff = Backoff(settings.broker.retry_delay, settings.broker.connection_attempts)
        self._consumer = Consumer(
            parameters, topology, dispatcher, self._ioloop, backoff, settings.broker,
            on_consuming=lambda: notify(f"READY=1\nSTATUS=consuming from queue {agent_uuid}"),
        )
        LOG.info("cloudmanagers agent %s (uuid %s) starting: %s", __version__, agent_uuid, safe_summary(settings))

    def run(self) -> int:
        """Serve until stopped; return the exit code (0 after a requested stop)."""
        self._consumer.start()
        self._ioloop.start()
        self._pool.shutdown()
        self._ioloop.close()
        return self._consumer.exit_code

    def request_stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        notify("STOPPING=1")
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
