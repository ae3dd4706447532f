"""Where a reply goes and which properties it carries (legacy routing, section 3.4).

Exchange: the request's ``reply_exchange`` header when present, even ``""`` (the default
exchange), else ``publish_exchange``. Routing key: ``reply_to``, else ``publish_routing_key``.
A pair that is ``("", "")`` would publish to the default exchange with no queue name, which
RabbitMQ silently drops; that request has no reply address: it still runs, and is acked unanswered.

The requester chooses the reply address, but the agent publishes with its own broker account:
an address outside ``ReplyPolicy`` would let any requester write where only the agent may
(``amq.topic``...), or loop a reply back into the agent as a request. Replies are persistent,
so one parked in a durable queue survives a broker restart.
"""

from typing import Any, FrozenSet, NamedTuple, Optional

from pika import BasicProperties

_SHORTSTR_MAX = 255  # AMQP exchange names and routing keys are short strings
PERSISTENT = 2  # AMQP delivery mode


class ReplyAddress(NamedTuple):
    exchange: str
    routing_key: str


def _text(value: Any) -> Optional[str]:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) and len(value.encode("utf-8")) <= _SHORTSTR_MAX else None


def reply_address(
    properties: BasicProperties, publish_exchange: str, publish_routing_key: str
) -> Optional[ReplyAddress]:
    """The reply's exchange and routing key, or None when the request has no reply address.

    A ``reply_exchange`` header that is not a short string (wrong type, too long) cannot be
    published to; it is treated as absent rather than letting pika fail on the I/O thread.
    """
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    exchange = _text(headers.get("reply_exchange"))
    address = ReplyAddress(
        publish_exchange if exchange is None else exchange,
        properties.reply_to or publish_routing_key,
    )
    return address if address.exchange or address.routing_key else None


def reply_properties(request: BasicProperties, user_id: Optional[str]) -> BasicProperties:
    """JSON, persistent, the request's correlation id, and the login user when it is known."""
    return BasicProperties(
        content_type="application/json",
        delivery_mode=PERSISTENT,
        correlation_id=request.correlation_id,
        user_id=user_id,
    )


class ReplyPolicy:
    """Which reply addresses a requester may choose.

    Allowed exchanges: ``""`` (the default exchange, straight into the requester's queue),
    ``publish_exchange`` and the operator's ``[agent] reply_exchanges``; never the exchange the
    agent's queue is bound to, nor the agent's own queue through the default exchange (every
    queue receives from the default exchange, so that one is only refused for the own queue).
    """

    def __init__(self, publish_exchange: str, extra: FrozenSet[str], consumed_exchange: str, own_queue: str) -> None:
        self._allowed = ({"", publish_exchange} | extra) - ({consumed_exchange} - {""})
        self._own_queue = own_queue

    def refusal(self, address: ReplyAddress) -> Optional[str]:
        """Why the agent will not publish to ``address``, or None when it may."""
        if address.exchange not in self._allowed:
            return f"reply_exchange '{address.exchange}' is not allowed (see [agent] reply_exchanges)"
        if address.exchange == "" and address.routing_key == self._own_queue:
            return "reply_to names the agent's own queue"
        return None
