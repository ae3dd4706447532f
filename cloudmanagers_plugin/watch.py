"""``cloudmanagers watch``: the agents' change events as they come, one line each.

It listens where the agents publish them (``[events] exchange`` and ``routing_key`` of the
agent's file, by default ``[rabbitmq] publish_exchange`` and ``publish_routing_key``) through an
exclusive auto-delete queue of its own, so watching takes nothing from the controller's queue
and leaves nothing behind. It starts, like ``call``, without the controller or any OpenStack
library.

Exit codes: 0 after Ctrl-C (or ``--count`` events), 2 bad usage or configuration (also a broker
login refused, or events that go to the default exchange, where no queue can be bound), 3 the
exchange does not exist, 4 broker unreachable or lost.
"""

import argparse
import json
import sys
import time
from typing import Any, Dict, Optional

import pika

from .agent.broker import connection_parameters, explain_connection_failure
from .agent.settings import from_command_line
from .errors import EXIT_CONFIG, CloudManagerError
from .render import event_line

EXIT_NO_EXCHANGE, EXIT_BROKER = 3, 4
COLLECTION = "cloudmanagers"


def register(subparsers: Any, broker: argparse.ArgumentParser) -> None:
    """Add ``watch`` to the ``cloudmanagers`` command (``broker``: the options that choose the broker)."""
    watch = subparsers.add_parser(
        "watch", parents=[broker], help="print the agents' change events as they come (Ctrl-C ends)",
        description="Listen to the change events of every agent (standalone agents only) and print one line "
                    "per event: time, cloud manager, #sequence, event, VM, status, then task state, flavor, "
                    "fault and id. Exit 0 on Ctrl-C, 2 bad usage or configuration, 3 no such exchange, "
                    "4 broker unreachable.",
    )
    watch.add_argument("cm_id", metavar="CM_ID", nargs="?", default="", help="only this cloud manager's events")
    watch.add_argument("--exchange", help="events exchange (default: [events] exchange, else publish_exchange)")
    watch.add_argument("--routing-key", metavar="KEY",
                       help="binding key (default: [events] routing_key, else publish_routing_key)")
    watch.add_argument("--count", metavar="N", type=int, help="exit 0 after N events")
    watch.add_argument("--json", action="store_true", help="print each message as one line of JSON")
    watch.set_defaults(func=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    """``cloudmanagers watch``: print the events until Ctrl-C."""
    try:
        settings = from_command_line(args)
    except CloudManagerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    default_exchange, default_key = settings.events_address
    exchange = default_exchange if args.exchange is None else args.exchange
    routing_key = default_key if args.routing_key is None else args.routing_key
    if not exchange:
        print(f"error: the events go to the default exchange (routing key '{routing_key}'), straight into the "
              "queue of that name: nothing can be bound there; set [events] exchange (or pass --exchange)",
              file=sys.stderr)
        return EXIT_CONFIG
    url = settings.broker.describe()
    try:
        connection = pika.BlockingConnection(connection_parameters(settings.broker, "cloudmanagers watch"))
    except CloudManagerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (pika.exceptions.AMQPError, OSError) as err:
        failure = explain_connection_failure(err, settings.broker)
        print(f"error: {'cannot log in to' if failure.permanent else 'cannot reach'} the broker at {url}: "
              f"{failure.reason}", file=sys.stderr)
        return EXIT_CONFIG if failure.permanent else EXIT_BROKER
    try:
        return _watch(connection, exchange, routing_key, args)
    except KeyboardInterrupt:
        return 0
    except pika.exceptions.ChannelClosedByBroker as err:
        if err.reply_code == 404:
            print(f"error: no exchange '{exchange}' on {url}: no agent publishes events there yet "
                  "(check [events] exchange, or --exchange)", file=sys.stderr)
            return EXIT_NO_EXCHANGE
        print(f"error: the broker at {url} refused: {err.reply_text}", file=sys.stderr)
        return EXIT_CONFIG
    except pika.exceptions.AMQPError as err:
        print(f"error: lost the broker at {url}: {explain_connection_failure(err, settings.broker).reason}",
              file=sys.stderr)
        return EXIT_BROKER
    finally:
        try:
            if connection.is_open:
                connection.close()
        except pika.exceptions.AMQPError:
            pass


def _watch(connection: Any, exchange: str, routing_key: str, args: argparse.Namespace) -> int:
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue, exchange, routing_key)
    print(f"watching the change events on exchange '{exchange}'"
          + (f" for cloud manager '{args.cm_id}'" if args.cm_id else "") + " (Ctrl-C ends)", file=sys.stderr)
    shown = 0
    for _method, _properties, body in channel.consume(queue, auto_ack=True):
        message = _decode(body)
        if message is None or (args.cm_id and message.get("resource_id") != args.cm_id):
            continue
        received = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(json.dumps(message, sort_keys=True) if args.json else event_line(message, received), flush=True)
        shown += 1
        if args.count and shown >= args.count:
            return 0
    return 0


def _decode(body: bytes) -> Optional[Dict[str, Any]]:
    """An event of this collection, or None for anything else published on that exchange."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("collection") != COLLECTION:
        return None
    return message
