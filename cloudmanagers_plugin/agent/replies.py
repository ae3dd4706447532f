"""Where a reply goes and which properties it carries (legacy routing, section 3.4).

Exchange: the request's ``reply_exchange`` header when present, even ``""`` (the default
exchange), else ``publish_exchange``. Routing key: ``reply_to``, else ``publish_routing_key``.
A pair that is ``("", "")`` would publish to the default exchange with no queue name, which
RabbitMQ silently drops; that request has no reply address: it still runs, and is acked unanswered.
"""

from typing import Any, NamedTuple, Optional

from pika import BasicProperties

_SHORTSTR_MAX = 255  # AMQP exchange names and routing keys are short strings


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
    """JSON content type, the request's correlation id, and the login user when it is known."""
    return BasicProperties(
        content_type="application/json",
        correlation_id=request.correlation_id,
        user_id=user_id,
    )
