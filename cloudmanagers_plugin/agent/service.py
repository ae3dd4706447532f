"""One agent run: the ``cloudmanagers agent`` command, the parts wired together, the IOLoop, a
graceful stop on SIGTERM/SIGINT, and systemd's readiness protocol.

The command checks what it can before connecting (settings, uuid, the cloud managers file): an
agent that cannot serve any cloud manager must not start. Exit 2 is a configuration error, which
the systemd unit does not restart.

systemd (``Type=notify``) passes a datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name``
for the abstract namespace); ``READY=1`` sent there tells it the service is up, so units ordered
after the agent and ``systemctl start`` wait until the agent really consumes. Outside systemd
it does nothing; no dependency is needed for one datagram.
"""

import argparse
import logging
import os
import signal
import socket
from typing import Any

from pika.adapters.select_connection import IOLoop

from ..controller import CloudmanagersController
from ..errors import EXIT_CONFIG, CloudManagerError
from ..logsafety import limit_library_logging
from ..logsetup import report_error
from ..version import __version__
from .admission import Gate, HostFilter, Permissions, legacy_zone
from .broker import connection_parameters, login_user_id
from .execution import AnswerCache, Dispatcher, OrderedPool, cached_weight
from .settings import AgentSettings, from_command_line, resolve_uuid, safe_summary
from .transport import Backoff, Consumer, Topology

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
            parameters, topology, self._ioloop, backoff, settings.broker,
            on_consuming=lambda: notify(f"READY=1\nSTATUS=consuming from queue {agent_uuid}"),
        )
        self._dispatcher = Dispatcher(
            gate, controller, self._pool,
            AnswerCache(settings.reply_cache_size, settings.reply_cache_bytes, cached_weight),
            self._ioloop.add_callback_threadsafe, settings.max_message_bytes, self._consumer,
        )
        LOG.info("cloudmanagers agent %s (uuid %s) starting: %s", __version__, agent_uuid, safe_summary(settings))

    def run(self) -> int:
        """Serve until stopped; return the exit code (0 after a requested stop)."""
        self._consumer.start(self._dispatcher)
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


# -- the command -------------------------------------------------------------------------------


def register(subparsers: Any, broker: argparse.ArgumentParser) -> None:
    """Add ``agent`` to the ``cloudmanagers`` command (``broker``: the options that choose the broker)."""
    agent = subparsers.add_parser(
        "agent", parents=[broker], help="run the AMQP agent (consume requests, answer them)",
        description="Consume synapse requests from the queue named after the agent uuid and answer "
                    "them; SIGTERM or SIGINT finishes the requests in flight, then exits 0. Exit 2: a "
                    "configuration error (unreadable file, no cloud manager, broker login, vhost, exchange "
                    "or queue refused at start); 1: the broker stayed unreachable.",
    )
    agent.add_argument("--config", metavar="PATH", help="cloud managers file passed to the controller")
    agent.add_argument("--uuid", metavar="UUID", help="agent uuid (= queue name); overrides the file")
    agent.set_defaults(func=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    """``cloudmanagers agent``: serve until SIGTERM/SIGINT."""
    try:
        settings = from_command_line(args)
        origin = "--uuid" if args.uuid else "[rabbitmq] uuid"
        settings.uuid = resolve_uuid(args.uuid or settings.uuid, settings.uuid_file, origin)
        level = logging.getLevelName(settings.log_level.upper())
        logging.getLogger().setLevel(min(logging.getLogger().level, level))
        # pika logs every failed attempt at ERROR in several lines; the agent says it in one.
        logging.getLogger("pika").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)
        root = logging.getLogger()
        limit_library_logging(root.level, logging.getLevelName(settings.library_log_level.upper()), root.handlers)
        controller = CloudmanagersController(config_path=args.config, agent_uuid=settings.uuid)
    except CloudManagerError as err:
        report_error(str(err))
        return EXIT_CONFIG
    try:
        _log_cloud_managers(controller)
        return AgentService(settings, controller).run_until_signalled()
    except CloudManagerError as err:
        report_error(str(err))
        return EXIT_CONFIG
    finally:
        controller.close()


def _log_cloud_managers(controller: CloudmanagersController) -> None:
    """Read the cloud managers file now: an agent that cannot serve any must not start."""
    sections = controller.config.all()
    if not sections:
        raise CloudManagerError(f"{controller.config.path}: no cloud manager section; nothing to serve")
    for name, section in sections.items():
        if isinstance(section, CloudManagerError):
            LOG.warning("cloud manager '%s' is invalid and answers errors until fixed: %s", name, section)
        else:
            LOG.info("cloud manager '%s': %s, keystone %s, project %s, compute API %s", name, section.cm_type,
                     section.auth_url, section.project_label, section.compute_api_version)


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
