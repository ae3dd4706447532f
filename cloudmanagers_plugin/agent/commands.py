"""The ``cloudmanagers agent`` and ``cloudmanagers call`` subcommands.

Exit codes of ``call``: 0 success, 1 error reply, 2 bad usage or configuration, 3 no reply
within the timeout (or no agent queue to deliver to), 4 broker unreachable.
"""

import argparse
import logging
import sys
from typing import Any, Dict, List, Tuple

import pika

from ..controller import CloudmanagersController
from ..errors import CloudManagerError
from . import render
from .client import NoRoute, RpcClient, build_request, parse_attr
from .identity import resolve_uuid
from .service import AgentService
from .settings import DEFAULT_AGENT_CONFIG, AgentSettings, apply_url, load_settings

EXIT_ERROR_REPLY, EXIT_CONFIG, EXIT_NO_REPLY, EXIT_BROKER = 1, 2, 3, 4
PING_WINDOW = 2.0
DEFAULT_TIMEOUT = 60.0


def register(subparsers: Any) -> None:
    """Add ``agent`` and ``call`` to the ``cloudmanagers`` command."""
    broker = argparse.ArgumentParser(add_help=False)
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
                    "them; SIGTERM or SIGINT finishes the requests in flight, then exits 0.",
    )
    agent.add_argument("--config", metavar="PATH", help="cloud managers file passed to the controller")
    agent.add_argument("--uuid", metavar="UUID", help="agent uuid (= queue name); overrides the file")
    agent.set_defaults(func=run_agent)

    call = subparsers.add_parser(
        "call", parents=[broker], help="send one request to the agents and print the reply",
        description="Publish a request as synapse-client does and print the reply (ping: every agent "
                    "that answers within the timeout). Exit 0 ok, 1 error reply, 2 bad usage, "
                    "3 no reply, 4 broker unreachable.",
    )
    call.add_argument("action", metavar="ACTION", help="ping, read, create, update or delete")
    call.add_argument("cm_id", metavar="CM_ID", nargs="?", default="", help="cloud manager id")
    call.add_argument("--name", help="VM name (attributes.name)")
    call.add_argument(
        "--attr", metavar="KEY=VALUE", action="append", default=[],
        help="one more attribute; JSON scalars (true, 5, null) are parsed, anything else is text",
    )
    call.add_argument("--target", metavar="UUID", help="send to this agent only (default: broadcast)")
    call.add_argument("--exchange", help="broadcast exchange (default: [rabbitmq] exchange, amq.fanout)")
    call.add_argument(
        "--timeout", metavar="S", type=float,
        help=f"seconds to wait (default {DEFAULT_TIMEOUT:g}; ping: {PING_WINDOW:g}, collecting every reply)",
    )
    call.add_argument("--json", action="store_true", help="print the raw reply JSON")
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
        settings.uuid = resolve_uuid(args.uuid or settings.uuid, settings.uuid_file)
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.getLevelName(settings.log_level.upper())))
        logging.getLogger("pika").setLevel(logging.WARNING)
        controller = CloudmanagersController(config_path=args.config, agent_uuid=settings.uuid)
    except CloudManagerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return AgentService(settings, controller).run_until_signalled()
    except CloudManagerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        controller.close()


def _attributes(args: argparse.Namespace) -> Dict[str, Any]:
    attributes = dict(parse_attr(text) for text in args.attr)
    if args.name is not None:
        attributes["name"] = args.name
    return attributes


def run_call(args: argparse.Namespace) -> int:
    """``cloudmanagers call``: one request, its reply (or every ping reply), an exit code."""
    try:
        settings = _settings(args)
        message = build_request(args.action, args.cm_id, _attributes(args), args.target)
    except (CloudManagerError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # returned-message warnings would echo the body
    exchange, routing_key = ("", args.target) if args.target else (args.exchange or settings.exchange, "")
    ping = args.action == "ping"
    timeout = args.timeout if args.timeout is not None else (PING_WINDOW if ping else DEFAULT_TIMEOUT)
    try:
        client = RpcClient(settings.broker)
    except CloudManagerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except pika.exceptions.AMQPError as err:
        print(f"error: cannot reach the broker at {settings.broker.describe()}: {err!r}", file=sys.stderr)
        return EXIT_BROKER
    try:
        correlation_id, sent = client.send(message, exchange, routing_key, timeout)
        replies = client.replies(correlation_id, timeout)
        return _print_ping(replies, sent, timeout, args.json) if ping else _print_reply(replies, timeout, args.json)
    except pika.exceptions.AMQPError as err:
        print(f"error: lost the broker at {settings.broker.describe()}: {err!r}", file=sys.stderr)
        return EXIT_BROKER
    except NoRoute:
        where = f"no agent queue named '{args.target}'" if args.target else f"no queue bound to '{exchange}'"
        print(f"error: request not delivered: {where}", file=sys.stderr)
        return EXIT_NO_REPLY
    finally:
        client.close()


def _print_reply(replies: Any, timeout: float, as_json: bool) -> int:
    for reply, _arrived in replies:
        print(render.json_text(reply) if as_json else render.reply_text(reply))
        return EXIT_ERROR_REPLY if "error" in reply else 0
    print(f"error: no reply within {timeout:g} s (check the target with 'cloudmanagers call ping')",
          file=sys.stderr)
    return EXIT_NO_REPLY


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
