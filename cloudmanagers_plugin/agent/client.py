"""Sending one request the way synapse-client does, and collecting its replies.

The request goes to the fanout exchange (every agent; ``filters`` pick the targets) or, with a
target, straight to that agent's queue through the default exchange. Replies come back to an
exclusive auto-delete queue through the default exchange (``reply_exchange`` header ``""``) and
are matched by correlation id. The publish is mandatory and confirmed, so "no agent queue by
that name" is reported at once instead of after the whole timeout. The request expires from the
queue when the caller stops waiting, so a stopped agent does not run it minutes later unseen.
"""

import json
import time
import uuid as uuidlib
from typing import Any, Dict, Iterator, Optional, Tuple

import pika

from .broker import connection_parameters, login_user_id
from .timestamps import iso_now
from .settings import BrokerSettings

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
    action: str, cm_id: str, attributes: Dict[str, Any], target: Optional[str]
) -> Dict[str, Any]:
    """The request body, with a zone-aware ``timestamp`` and a ``uuids`` filter when targeted."""
    return {
        "action": action,
        "collection": COLLECTION,
        "id": cm_id,
        "attributes": attributes,
        "filters": {"uuids": [target]} if target else {},
        "timestamp": iso_now(),
    }


class NoRoute(Exception):
    """No queue received the request (no agent with that uuid, or none bound to the exchange)."""


class NoExchange(Exception):
    """The exchange the request was published to does not exist."""


class RpcClient:
    """One blocking connection with a private reply queue."""

    def __init__(self, broker: BrokerSettings) -> None:
        self._user_id = login_user_id(broker)
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
