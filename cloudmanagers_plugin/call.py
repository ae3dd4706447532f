"""``cloudmanagers call``: send one request the way synapse-client does, and print its replies.

The request goes to the fanout exchange (every agent; ``filters`` pick the targets) or, with a
target, straight to that agent's queue through the default exchange. Replies come back to an
exclusive auto-delete queue through the default exchange (``reply_exchange`` header ``""``) and
are matched by correlation id. The publish is mandatory and confirmed, so "no agent queue by
that name" is reported at once instead of after the whole timeout. The request expires from the
queue when the caller stops waiting, so a stopped agent does not run it minutes later unseen.

Exit codes: 0 success, 1 an error reply (any, for a broadcast), 2 bad usage or configuration
(also a broker login or vhost refused), 3 no reply within the timeout (or nowhere to deliver: no
such agent queue, no such exchange), 4 broker unreachable.
"""

import argparse
import itertools
import json
import logging
import sys
import time
import uuid as uuidlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pika

from .agent.admission import iso_now
from .agent.broker import connection_parameters, explain_connection_failure, login_user_id
from .agent.settings import BrokerSettings, from_command_line
from .errors import EXIT_CONFIG, CloudManagerError
from .render import broadcast_summary, json_text, ping_text, reply_text

EXIT_ERROR_REPLY, EXIT_NO_REPLY, EXIT_BROKER = 1, 3, 4
PING_WINDOW = 2.0
BROADCAST_WINDOW = 10.0
DEFAULT_TIMEOUT = 60.0
CHANGING = ("create", "update", "delete")


COLLECTION = "cloudmanagers"


def parse_attr(text: str, as_text: bool = False) -> Tuple[str, Any]:
    """``KEY=VALUE``; a JSON scalar value (``true``, ``5``, ``null``) is parsed unless ``as_text``."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--{'string' if as_text else 'attr'} expects KEY=VALUE, got '{text}'")
    if as_text:
        return key, raw
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    return key, value if value is None or isinstance(value, (bool, int, float, str)) else raw


def build_request(
    action: str, cm_id: str, attributes: Dict[str, Any], target: Optional[str], monitor: Optional[bool] = None
) -> Dict[str, Any]:
    """The request body, with a zone-aware ``timestamp``, a ``uuids`` filter when targeted, and
    synapse's ``monitor`` flag when asked (as synapse-client's ``--monitor``/``--unmonitor``)."""
    request = {
        "action": action,
        "collection": COLLECTION,
        "id": cm_id,
        "attributes": attributes,
        "filters": {"uuids": [target]} if target else {},
        "timestamp": iso_now(),
    }
    if monitor is not None:
        request["monitor"] = monitor
    return request


class NoRoute(Exception):
    """No queue received the request (no agent with that uuid, or none bound to the exchange)."""


class NoExchange(Exception):
    """The exchange the request was published to does not exist."""


class RpcClient:
    """One blocking connection with a private reply queue."""

    def __init__(self, broker: BrokerSettings) -> None:
        self._user_id = login_user_id(broker)
        # a list: pika tries the nodes in order and keeps the first that answers
        self._connection = pika.BlockingConnection(connection_parameters(broker, "cloudmanagers call"))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
        self._reply_queue = declared.method.queue
        self._replies: list = []
        self._channel.basic_consume(self._reply_queue, self._on_reply, auto_ack=True)

    def _on_reply(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        self._replies.append((properties.correlation_id, body, time.monotonic()))

    def send(
        self, message: Dict[str, Any], exchange: str, routing_key: str, expires_in: Optional[float] = None
    ) -> Tuple[str, float]:
        """Publish ``message``; return its correlation id and the time it was sent.

        The AMQP ``timestamp`` says when, whatever the zones of sender and agent; with
        ``expires_in``, the ``expiration`` makes the broker drop the request if no agent took it
        within that many seconds, when nobody waits for its reply any more.
        """
        correlation_id = str(uuidlib.uuid4())
        properties = pika.BasicProperties(
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=self._reply_queue,
            user_id=self._user_id,
            headers={"reply_exchange": ""},
            timestamp=int(time.time()),
            expiration=None if expires_in is None else str(max(1, int(expires_in * 1000))),
        )
        sent = time.monotonic()
        try:
            self._channel.basic_publish(
                exchange, routing_key, json.dumps(message).encode("utf-8"), properties, mandatory=True
            )
        except pika.exceptions.UnroutableError:
            raise NoRoute() from None
        except pika.exceptions.ChannelClosedByBroker as err:
            if err.reply_code == 404:
                raise NoExchange() from None
            raise
        return correlation_id, sent

    def replies(self, correlation_id: str, timeout: float) -> Iterator[Tuple[Dict[str, Any], float]]:
        """Yield ``(reply, arrival time)`` for each reply to ``correlation_id`` until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            while self._replies:
                reply_to, body, arrived = self._replies.pop(0)
                if reply_to == correlation_id:
                    yield _decode(body), arrived
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._connection.process_data_events(time_limit=min(remaining, 0.25))

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()


def _decode(body: bytes) -> Dict[str, Any]:
    """A reply as a dict; a body that is not a JSON object becomes an error reply."""
    try:
        reply = json.loads(body)
    except ValueError:
        reply = None
    if isinstance(reply, dict):
        return reply
    return {"error": f"unreadable reply: {body[:200]!r}", "status": {}}


# -- the command -------------------------------------------------------------------------------


def register(subparsers: Any, broker: argparse.ArgumentParser) -> None:
    """Add ``call`` to the ``cloudmanagers`` command (``broker``: the options that choose the broker)."""
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
    watch = call.add_mutually_exclusive_group()
    watch.add_argument("--monitor", dest="monitor", action="store_const", const=True,
                       help="create/update: the agent keeps the VM's resulting state as its desired state and "
                            "reports drifts (compliance_error, compliance_ok)")
    watch.add_argument("--unmonitor", dest="monitor", action="store_const", const=False,
                       help="create/update: stop monitoring the VM")
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
        settings = from_command_line(args)
        attributes = _attributes(args)
        message = build_request(args.action, args.cm_id, attributes, args.target, args.monitor)
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
        last = settings.broker.endpoints[-1]  # every node was tried in turn: the error is the last one's
        failure = explain_connection_failure(err, settings.broker, last)
        verb = "cannot log in to" if failure.permanent else "cannot reach"
        nodes = len(settings.broker.endpoints)
        tried = f"{nodes} nodes tried, the last: " if nodes > 1 else ""
        print(f"error: {verb} the broker at {url}: {tried}{failure.reason}", file=sys.stderr)
        return EXIT_CONFIG if failure.permanent else EXIT_BROKER
    try:
        correlation_id, sent = client.send(message, exchange, routing_key, timeout)
        replies = client.replies(correlation_id, timeout)
        if args.target:  # one agent answers once: stop at its reply instead of waiting out the window
            replies = itertools.islice(replies, 1)
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
    print(reply_text(reply, cli=True), file=sys.stderr if "error" in reply else sys.stdout)


def _print_reply(replies: Any, timeout: float, as_json: bool) -> int:
    for reply, _arrived in replies:
        if as_json:
            print(json_text(reply))
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
        print(json_text(answered))
    else:
        for position, reply in enumerate(answered):
            if position:
                print(file=sys.stderr if "error" in reply else sys.stdout)
            _show(reply)
        print(broadcast_summary(len(answered), errors, window), file=sys.stderr if errors else sys.stdout)
    return EXIT_ERROR_REPLY if errors else 0


def _print_ping(replies: Any, sent: float, window: float, as_json: bool) -> int:
    answered: List[Tuple[Dict[str, Any], float]] = [(reply, arrived - sent) for reply, arrived in replies]
    if not answered:
        print(f"error: no agent answered within {window:g} s", file=sys.stderr)
        return EXIT_NO_REPLY
    if as_json:
        print(json_text(sorted((reply for reply, _ in answered), key=lambda r: str(r.get("uuid")))))
    else:
        print(ping_text(answered, window))
    failed = any("error" in reply for reply, _ in answered)
    return EXIT_ERROR_REPLY if failed else 0
