"""Publishes replies with publisher confirms, on a channel of its own.

A request is acked only once its reply is confirmed, so the broker keeps (and redelivers) any
request whose answer could still be lost. Replies have their own channel because publishing to
an exchange that does not exist (a requester's ``reply_exchange`` typo, a missing ``inbox``)
makes RabbitMQ close the channel: that must not cancel the consumer and its deliveries.

Nor may it cost other replies: when the broker closes a channel it discards what follows the
bad publish, and re-sending what preceded it would duplicate replies the broker had routed.
So the first reply to an exchange (other than the default one) waits while a passive declare
on a short-lived channel of its own checks that the exchange exists; a missing exchange closes
only that probe channel and costs only the replies waiting for it. Exchanges found are
remembered for the connection (the reply policy keeps them few).
"""

import logging
import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, List, Set

from pika import BasicProperties
from pika.spec import Basic

from ..values import printable

if TYPE_CHECKING:
    from .transport import ReplyAddress

LOG = logging.getLogger(__name__)

_MISSING_EXCHANGE = re.compile(r"no exchange '(.*)' in vhost")

# Called once per reply with its ticket: "" once the broker confirmed it, else why it was given up.
Settled = Callable[[Any, str], None]


@dataclass
class _Outgoing:
    address: "ReplyAddress"
    properties: BasicProperties
    body: bytes
    ticket: Any
    failures: int = 0


class ReplyPublisher:
    """Owns the reply channel of the current connection (I/O thread only)."""

    MAX_FAILURES = 3

    def __init__(self, settled: Settled) -> None:
        self._settled = settled
        self._connection: Any = None
        self._channel: Any = None
        self._ready = False
        self._sequence = 0
        self._unconfirmed: "OrderedDict[int, _Outgoing]" = OrderedDict()
        self._waiting: Deque[_Outgoing] = deque()
        self._exchanges_found: Set[str] = {""}
        self._probing: Dict[str, List[_Outgoing]] = {}  # exchange -> replies waiting for its check

    @property
    def pending(self) -> bool:
        """True while some reply has been handed over but not yet confirmed or given up."""
        return bool(self._unconfirmed or self._waiting or self._probing)

    def attach(self, connection: Any) -> None:
        """Open the reply channel on a newly opened connection."""
        self._connection = connection
        self._exchanges_found = {""}
        self._open_channel()

    def detach(self) -> None:
        """The connection is gone: every reply still pending is given up.

        Their requests were not acked, so the broker redelivers them and the answer cache
        answers them again; re-publishing here would only duplicate that.
        """
        self._connection = self._channel = None
        self._ready = False
        pending = list(self._unconfirmed.values()) + list(self._waiting)
        pending += [item for items in self._probing.values() for item in items]
        self._unconfirmed.clear()
        self._waiting.clear()
        self._probing.clear()
        for item in pending:
            self._settled(item.ticket, "connection lost before the reply was confirmed")

    def publish(self, address: "ReplyAddress", properties: BasicProperties, body: bytes, ticket: Any) -> None:
        """Send one reply now, or as soon as the reply channel is ready; ``settled(ticket, ...)`` says how it went."""
        self._dispatch(_Outgoing(address, properties, body, ticket))

    def _dispatch(self, item: _Outgoing) -> None:
        """Messages to one exchange leave in the order they came (change events are numbered):
        nothing passes the ones waiting for the channel, nor those waiting for their exchange's check."""
        if not self._ready:
            self._waiting.append(item)
        elif item.address.exchange not in self._exchanges_found:
            self._probe(item)
        else:
            self._send(item)

    # -- checking an exchange before its first reply ------------------------------------------

    def _probe(self, item: _Outgoing) -> None:
        exchange = item.address.exchange
        if exchange in self._probing:
            self._probing[exchange].append(item)
            return
        self._probing[exchange] = [item]
        self._connection.channel(on_open_callback=lambda channel: self._on_probe_open(channel, exchange))

    def _on_probe_open(self, channel: Any, exchange: str) -> None:
        channel.add_on_close_callback(lambda _channel, reason: self._on_probe_closed(exchange, reason))
        channel.exchange_declare(exchange, passive=True, callback=lambda _frame: self._on_found(channel, exchange))

    def _on_found(self, channel: Any, exchange: str) -> None:
        self._exchanges_found.add(exchange)
        waiting = self._probing.pop(exchange, [])
        channel.close()
        for item in waiting:
            self._dispatch(item)

    def _on_probe_closed(self, exchange: str, reason: Exception) -> None:
        """The probe channel closed before the exchange was found: it is missing (or forbidden)."""
        waiting = self._probing.pop(exchange, [])
        if not waiting:
            return  # closed by _on_found, or the connection went first (detach gave them up)
        if self._connection is None or not self._connection.is_open:
            self._waiting.extend(waiting)  # detach() gives them up with the connection
            return
        LOG.warning("reply exchange '%s' cannot be used (%s): %d reply(ies) dropped",
                    printable(exchange), printable(reason), len(waiting))
        for item in waiting:
            self._settled(item.ticket, f"reply exchange '{exchange}' cannot be used; reply dropped")

    # -- the reply channel ------------------------------------------------------------------------

    def _open_channel(self) -> None:
        self._connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self._sequence = 0
        self._ready = True
        while self._waiting and self._ready:
            self._dispatch(self._waiting.popleft())

    def _send(self, item: _Outgoing) -> None:
        self._sequence += 1
        self._unconfirmed[self._sequence] = item
        self._channel.basic_publish(
            item.address.exchange, item.address.routing_key, item.body, item.properties
        )

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.multiple:
            tags = [tag for tag in self._unconfirmed if tag <= method.delivery_tag]
        else:
            tags = [method.delivery_tag]
        confirmed = [self._unconfirmed.pop(tag) for tag in tags if tag in self._unconfirmed]
        if isinstance(method, Basic.Ack):
            for item in confirmed:
                self._settled(item.ticket, "")
        else:
            self._requeue(confirmed, "the broker refused the reply", failed=True)

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        if channel is not self._channel:
            return
        self._channel = None
        self._ready = False
        failed = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        if self._connection is None or not self._connection.is_open:
            self._waiting.extendleft(reversed(failed))  # detach() gives them up with the connection
            return
        LOG.warning("reply channel closed by the broker (%s); reopening it", printable(reason))
        found = _MISSING_EXCHANGE.search(str(reason))
        if found is None:  # cause unknown: every reply in flight may be to blame
            self._requeue(failed, f"reply channel closed ({reason})", failed=True)
        else:  # an exchange deleted since it was checked; the broker names it
            self._drop_after_missing_exchange(found.group(1), failed)
        self._open_channel()

    def _drop_after_missing_exchange(self, missing: str, failed: List[_Outgoing]) -> None:
        """The broker handles a channel's publishes in order: those before the failed one were
        routed (sending them again would duplicate them), those after it were discarded."""
        self._exchanges_found.discard(missing)
        culprit = next((index for index, item in enumerate(failed) if item.address.exchange == missing), len(failed))
        for item in failed[:culprit]:
            self._settled(item.ticket, "routed before the reply channel closed; its confirm was lost")
        for item in failed[culprit:]:
            if item.address.exchange == missing:
                self._settled(item.ticket, f"reply exchange '{missing}' does not exist; reply dropped")
        self._requeue([item for item in failed[culprit:] if item.address.exchange != missing], "", failed=False)

    def _requeue(self, items: Iterable[_Outgoing], why: str, failed: bool) -> None:
        """Retry replies in their original order; one that failed MAX_FAILURES times is given up."""
        retry = []
        for item in items:
            item.failures += failed
            if item.failures >= self.MAX_FAILURES:
                self._settled(item.ticket, f"{why}; reply dropped after {item.failures} failures")
            else:
                retry.append(item)
        if self._ready:
            for item in retry:
                self._send(item)
        else:
            self._waiting.extendleft(reversed(retry))
