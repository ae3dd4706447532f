"""The ``cloudmanagers agent`` command: its options, and the checks before the agent starts.

The command checks what it can before connecting (settings, uuid, the cloud managers file): an
agent that cannot serve any cloud manager must not start. Exit 2 is a configuration error, which
the systemd unit does not restart. The agent's parts (service.py) and the controller are
imported when the command runs, so that ``cloudmanagers call`` and ``--version`` start without them.
"""

import argparse
import logging
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_CONFIG, CloudManagerError
from ..logsafety import limit_library_logging
from ..logsetup import report_error
from .settings import DEFAULT_METRICS_LISTEN, from_command_line, parse_listen, resolve_uuid

if TYPE_CHECKING:
    from ..controller import CloudmanagersController

LOG = logging.getLogger("cloudmanagers_plugin.agent")


def register(subparsers: Any, broker: argparse.ArgumentParser) -> None:
    """Add ``agent`` to the ``cloudmanagers`` command (``broker``: the options that choose the broker)."""
    agent = subparsers.add_parser(
        "agent", parents=[broker], help="run the AMQP agent (consume requests, answer them)",
        description="Consume synapse requests from the queue named after the agent uuid and answer "
                    "them; SIGTERM or SIGINT finishes the requests in flight, then exits 0. Exit 2: a "
                    "configuration error (unreadable file, no cloud manager, broker login, vhost, exchange "
                    "or queue refused at start, metrics address in use); 1: the broker stayed unreachable.",
    )
    agent.add_argument("--config", metavar="PATH", help="cloud managers file passed to the controller")
    agent.add_argument("--uuid", metavar="UUID", help="agent uuid (= queue name); overrides the file")
    agent.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve /metrics and /healthz there (default [agent] metrics_listen, else "
                            f"{DEFAULT_METRICS_LISTEN}; each agent of a host needs its own; '' disables)")
    agent.set_defaults(func=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    """``cloudmanagers agent``: serve until SIGTERM/SIGINT."""
    from ..controller import CloudmanagersController
    from .desired_store import DesiredStateStore
    from .metrics import AgentMetrics
    from .service import AgentService

    try:
        settings = from_command_line(args)
        if args.metrics_listen is not None:
            parse_listen(args.metrics_listen)
            settings.metrics_listen = args.metrics_listen
        origin = "--uuid" if args.uuid else "[rabbitmq] uuid"
        settings.uuid = resolve_uuid(args.uuid or settings.uuid, settings.uuid_file, origin)
        level = logging.getLevelName(settings.log_level.upper())
        logging.getLogger().setLevel(min(logging.getLogger().level, level))
        # pika logs every failed attempt at ERROR in several lines; the agent says it in one.
        logging.getLogger("pika").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)
        root = logging.getLogger()
        limit_library_logging(root.level, logging.getLevelName(settings.library_log_level.upper()), root.handlers)
        metrics = AgentMetrics()
        # monitored desired states are judged on change events: without events, monitor changes nothing
        desired = DesiredStateStore(settings.state_dir) if settings.events_enabled else None
        controller = CloudmanagersController(config_path=args.config, agent_uuid=settings.uuid, events=metrics,
                                             desired_states=desired)
    except CloudManagerError as err:
        report_error(str(err))
        return EXIT_CONFIG
    try:
        _log_cloud_managers(controller)
        return AgentService(settings, controller, metrics).run_until_signalled()
    except CloudManagerError as err:
        report_error(str(err))
        return EXIT_CONFIG
    finally:
        controller.close()


def _log_cloud_managers(controller: "CloudmanagersController") -> None:
    """Read the cloud managers file now: an agent that cannot serve any must not start."""
    sections = controller.config.all()
    if not sections:
        raise CloudManagerError(f"{controller.config.path}: no cloud manager section; nothing to serve")
    for name, section in sections.items():
        if isinstance(section, CloudManagerError):
            LOG.warning("cloud manager '%s' is invalid and answers errors until fixed: %s", name, section)
        else:
            bus = section.notifications_url
            tls = f", TLS verified against {bus.ca_file or 'the system CAs'}" if bus and bus.use_ssl else ""
            LOG.info("cloud manager '%s': %s, keystone %s, project %s, compute API %s%s%s", name, section.cm_type,
                     section.auth_url, section.project_label, section.compute_api_version,
                     f", notifications {bus.masked} (exchange '{section.notifications_exchange}'{tls})" if bus else "",
                     ", remediates monitored VMs" if section.remediate else "")
