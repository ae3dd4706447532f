"""The ``cloudmanagers agent`` and ``cloudmanagers call`` subcommands.

Exit codes of ``call``: 0 success, 1 an error reply (any, for a broadcast), 2 bad usage or
configuration (also a broker login or vhost refused), 3 no reply within the timeout (or nowhere
to deliver: no such agent queue, no such exchange), 4 broker unreachable.
"""

import argparse
import logging
import sys
from typing import Any, Dict, List, Tuple

import pika

from ..controller import CloudmanagersController
from ..errors import CloudManagerError
from ..logsetup import report_error
from ..logsafety import limit_library_logging
from . import render
from .broker import explain_connection_failure
from .client import NoExchange, NoRoute, RpcClient, build_request, parse_attr
from .identity import resolve_uuid
from .service import AgentService
from .settings import DEFAULT_AGENT_CONFIG, AgentSettings, apply_url, load_settings

EXIT_ERROR_REPLY, EXIT_CONFIG, EXIT_NO_REPLY, EXIT_BROKER = 1, 2, 3, 4
PING_WINDOW = 2.0
BROADCAST_WINDOW = 10.0
DEFAULT_TIMEOUT = 60.0
CHANGING = ("create", "update", "delete")

LOG = logging.getLogger("cloudmanagers_plugin.agent")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``agent`` and ``call`` to the ``cloudmanagers`` command (``common``: -v)."""
    broker = argparse.ArgumentParser(add_help=False, parents=[common])
    broker.add_argument(
        "--agent-config", metavar="PATH",
        help=f"synapse agent config file ([rabbitmq], [agent]); default {DEFAULT_AGENT_CONFIG} if present",
    )
    broker.add_argument(
        "--url", metavar="URL", help="broker URL amqp(s)://user:password@host:port/vhost (overrides the file)"
    )

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

    call = subparsers.add_parser(
        "call", parents=[broker], help="send one request to the agents and print the reply",
        description="Publish a request as synapse-client does and print the reply. create, update and "
                    "delete need --target (one agent) or --broadcast (every agent: each reply is printed). "
                    "Exit 0 ok, 1 error reply, 2 bad usage or configuration, 3 no reply, 4 broker unreachable.",
    )
    call.add_argument("action", metavar="ACTION", help="ping, read, create, update or delete")
    call.add_argument("cm_id", metavar="CM_ID", nargs="?", default="", help="cloud manager id")
    call.add_argument("--name", help="VM name or id (attributes.name)")
    call.add_argument("--flavor", help="flavor id or name (create, resize)")
    call.add_argument("--image", help="image id or name (create)")
    call.add_argument("--status", help="target state (update): ACTIVE, PAUSED, SUSPENDED, SHUTOFF, REBOOT...")
    call.add_argument("--wait", metavar="S", type=float, help="seconds the agent waits for the VM's final state before answering")
    call.add_argument("--force", action="store_true", help="delete even an ACTIVE VM")
    call.add_argument(
        "--attr", metavar="KEY=VALUE", action="append", default=[],
        help="one more attribute; JSON scalars (true, 5, null) are parsed, anything else is text",
    )
    call.add_argument(
        "--string", metavar="KEY=VALUE", action="append", default=[],
        help="one more attribute sent as text even if it looks like a number or boolean",
    )
    where = call.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="UUID", help="send to this agent only ('call ping' lists them)")
    where.add_argument("--broadcast", action="store_true",
                       help="send to every agent on the exchange (the default for ping and read)")
    call.add_argument("--exchange", help="broadcast exchange (default: [rabbitmq] exchange, amq.fanout)")
    call.add_argument(
        "--timeout", metavar="S", type=float,
        help=f"seconds to wait; the request expires unread after it (default {DEFAULT_TIMEOUT:g} plus the "
             f"request's wait; a broadcast collects every reply for {BROADCAST_WINDOW:g}, ping for {PING_WINDOW:g})",
    )
    call.add_argument("--json", action="store_true", help="print the raw reply JSON (a list for a broadcast)")
    call.set_defaults(func=run_call)


def _settings(args: argparse.Namespace) -> AgentSettings:
    settings = load_settings(args.agent_config)
    if args.url:
        apply_url(settings.broker, args.url)
    return settings


def run_agent(args: argparse.Namespace) -> int:
    """``cloudmanagers agent``: serve until SIGTERM/SIGINT."""
    try:
        settings = _settings(args)
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
                     section.auth_url, section.project_name, section.compute_api_version)


def _attributes(args: argparse.Namespace) -> Dict[str, Any]:
    attributes = dict(parse_attr(text) for text in args.attr)
    attributes.update(parse_attr(text, as_text=True) for text in args.string)
    named = {"name": args.name, "flavor": args.flavor, "image": args.image, "status": args.status,
             "wait": args.wait, "force": True if args.force else None}
    attributes.update({key: value for key, value in named.items() if value is not None})
    if args.action == "read" and args.cm_id and not attributes and not args.json:
        attributes["details"] = True  # id, name and status of each VM, for the table (--json: as asked)
    return attributes


def _wait(attributes: Dict[str, Any]) -> float:
    """The request's own ``wait``: the default timeout outlasts it."""
    wait = attributes.get("wait")
    return float(wait) if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0 else 0.0


def run_call(args: argparse.Namespace) -> int:
    """``cloudmanagers call``: one request, its reply (or every reply of a broadcast), an exit code."""
    if args.action in CHANGING and not (args.target or args.broadcast):
        print(f"error: refusing to broadcast a {args.action} to every agent: pass --target UUID "
              "(list the agents with 'cloudmanagers call ping') or --broadcast", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = _settings(args)
        attributes = _attributes(args)
        message = build_request(args.action, args.cm_id, attributes, args.target)
    except (CloudManagerError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # returned-message warnings would echo the body
    exchange, routing_key = ("", args.target) if args.target else (args.exchange or settings.exchange, "")
    ping = args.action == "ping"
    timeout = args.timeout
    if timeout is None:
        timeout = PING_WINDOW if ping else (DEFAULT_TIMEOUT if args.target else BROADCAST_WINDOW) + _wait(attributes)
    url = settings.broker.describe()
    try:
        client = RpcClient(settings.broker)
    except CloudManagerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (pika.exceptions.AMQPError, OSError) as err:
        failure = explain_connection_failure(err, settings.broker)
        verb = "cannot log in to" if failure.permanent else "cannot reach"
        print(f"error: {verb} the broker at {url}: {failure.reason}", file=sys.stderr)
        return EXIT_CONFIG if failure.permanent else EXIT_BROKER
    try:
        correlation_id, sent = client.send(message, exchange, routing_key, timeout)
        replies = client.replies(correlation_id, timeout)
        if ping:
            return _print_ping(replies, sent, timeout, args.json)
        if args.target:
            return _print_reply(replies, timeout, args.json)
        return _print_broadcast(replies, timeout, args.json)
    except NoExchange:
        print(f"error: request not delivered: the exchange '{exchange}' does not exist on {url} "
              "(check --exchange or [rabbitmq] exchange)", file=sys.stderr)
        return EXIT_NO_REPLY
    except NoRoute:
        where = f"no agent queue named '{args.target}'" if args.target else f"no queue bound to '{exchange}'"
        print(f"error: request not delivered: {where}", file=sys.stderr)
        return EXIT_NO_REPLY
    except pika.exceptions.AMQPError as err:
        print(f"error: lost the broker at {url}: {explain_connection_failure(err, settings.broker).reason}",
              file=sys.stderr)
        return EXIT_BROKER
    finally:
        client.close()


def _no_reply(timeout: float) -> int:
    print(f"error: no reply within {timeout:g} s; the request expires unread from the queue, but an agent "
          "that took it may still run it (see its log; list the agents with 'cloudmanagers call ping')",
          file=sys.stderr)
    return EXIT_NO_REPLY


def _show(reply: Dict[str, Any]) -> None:
    """A reply as a table: on stdout when it succeeded, on stderr when it is an error."""
    print(render.reply_text(reply, cli=True), file=sys.stderr if "error" in reply else sys.stdout)


def _print_reply(replies: Any, timeout: float, as_json: bool) -> int:
    for reply, _arrived in replies:
        if as_json:
            print(render.json_text(reply))
        else:
            _show(reply)
        return EXIT_ERROR_REPLY if "error" in reply else 0
    return _no_reply(timeout)


def _print_broadcast(replies: Any, window: float, as_json: bool) -> int:
    """Every reply within the window, each printed, then how many agents answered and failed."""
    answered = [reply for reply, _arrived in replies]
    if not answered:
        return _no_reply(window)
    errors = sum("error" in reply for reply in answered)
    if as_json:
        print(render.json_text(answered))
    else:
        for position, reply in enumerate(answered):
            if position:
                print(file=sys.stderr if "error" in reply else sys.stdout)
            _show(reply)
        print(render.broadcast_summary(len(answered), errors, window), file=sys.stderr if errors else sys.stdout)
    return EXIT_ERROR_REPLY if errors else 0


def _print_ping(replies: Any, sent: float, window: float, as_json: bool) -> int:
    answered: List[Tuple[Dict[str, Any], float]] = [(reply, arrived - sent) for reply, arrived in replies]
    if not answered:
        print(f"error: no agent answered within {window:g} s", file=sys.stderr)
        return EXIT_NO_REPLY
    if as_json:
        print(render.json_text(sorted((reply for reply, _ in answered), key=lambda r: str(r.get("uuid")))))
    else:
        print(render.ping_text(answered, window))
    failed = any("error" in reply for reply, _ in answered)
    return EXIT_ERROR_REPLY if failed else 0
