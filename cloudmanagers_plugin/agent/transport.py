"""Transport: the agent's AMQP life cycle, its reply addresses and its one log line per request.

The consumer follows pika's asynchronous consumer example: one small callback per AMQP step,
explicit acks, clean stop, and reconnection with back-off. One IOLoop lives for the whole run
and every connection is built on it, so worker threads can always hand results back with
``add_callback_threadsafe``, even across reconnections. A request is acked only once its reply
is confirmed (``publisher.py``), in one step, ``Consumer.reply_and_ack``; the acks due in one
loop turn go out together (``Acks``), in the same write as that turn's replies
(``broker.CoalescingConnection``).

Until the first consume-ok, a refusal that waiting cannot fix (login, vhost, a missing exchange
or queue, a permission the user lacks) is a configuration error: the agent exits 2, which the
systemd unit does not restart, instead of retrying for hours. After that, every failure is
retried with back-off, which only resets once consuming works again.

Reply addresses (legacy routing, section 3.4). Exchange: the request's ``reply_exchange``
header when present, even ``""`` (the default exchange), else ``publish_exchange``. Routing
key: ``reply_to``, else ``publish_routing_key``. A pair that is ``("", "")`` would publish to
the default exchange with no queue name, which RabbitMQ silently drops; that request has no
reply address: it still runs, and is acked unanswered. The requester chooses the reply address,
but the agent publishes with its own broker account: an address outside ``ReplyPolicy`` would
let any requester write where only the agent may (``amq.topic``...), or loop a reply back into
the agent as a request. Replies are persistent, so one parked in a durable queue survives a
broker restart.

The request line is logfmt (``key=value`` pairs that Loki, lnav or ``grep`` split reliably): a
value that is empty or holds a space, a quote, an ``=``, a backslash or a non-printable
character is double-quoted with JSON escapes, so a sentence with spaces stays one value and a
control character sent by a requester cannot forge a second log line.
"""

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import pika
from pika import BasicProperties
from pika.adapters.select_connection import IOLoop

from .admission import Answer, Summary
from .broker import CoalescingConnection, explain_connection_failure
from .metrics import AgentMetrics
from .publisher import ReplyPublisher
from .settings import BrokerSettings, host_port
from .status import AgentStatus

if TYPE_CHECKING:
    from .execution import Dispatcher

LOG = logging.getLogger("cloudmanagers_plugin.agent")


# -- reply addresses ---------------------------------------------------------------------------


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


# -- the request line ---------------------------------------------------------------------------


_LOGFMT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _logfmt_escaped(char: str) -> str:
    if char in _LOGFMT_ESCAPES:
        return _LOGFMT_ESCAPES[char]
    if char.isprintable():
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def _logfmt_value(raw: Any) -> str:
    """One value, quoted only when it must be."""
    text = "" if raw is None else str(raw)
    if text and text.isprintable() and not any(char in text for char in ' "=\\'):
        return text
    return '"' + "".join(_logfmt_escaped(char) for char in text) + '"'


def _logfmt(**fields: Any) -> str:
    """``key=value`` pairs in the given order."""
    return " ".join(f"{key}={_logfmt_value(raw)}" for key, raw in fields.items())


# -- acks ------------------------------------------------------------------------------------------


class Acks:
    """The acks of the consume channel, sent once per IOLoop turn (I/O thread only).

    Each ``basic_ack`` is a socket write of its own, on the one thread that also reads every
    request; under load several requests end in one loop turn, and one ``basic_ack(tag,
    multiple=True)`` settles every delivery up to ``tag``. It may only cover deliveries that are
    all answered, so the answered run at the front (the oldest) goes as one multiple ack and any
    other answered delivery on its own: a long ``create --wait`` at the front must not hold back
    the acks behind it, which would fill the prefetch window.
    """

    def __init__(self, schedule: Callable[[Callable[[], None]], Any]) -> None:
        self._schedule = schedule
        self._channel: Any = None
        self._outstanding: Dict[int, bool] = {}  # delivery tag -> answered, in delivery order
        self._scheduled = False

    def use(self, channel: Any) -> None:
        """A new consume channel: the tags of the old one mean nothing on it."""
        self._channel = channel
        self._outstanding = {}

    def delivered(self, tag: int) -> None:
        self._outstanding[tag] = False

    def answered(self, tag: int) -> None:
        """Ack ``tag`` before the next loop turn."""
        self._outstanding[tag] = True
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        """Send every ack due now (also called before closing, so that none is lost)."""
        self._scheduled = False
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        answered = [tag for tag, done in self._outstanding.items() if done]
        front = 0
        for done in self._outstanding.values():
            if not done:
                break
            front += 1
        if front:
            channel.basic_ack(answered[front - 1], multiple=front > 1)
        for tag in answered[front:]:
            channel.basic_ack(tag)
        for tag in answered:
            del self._outstanding[tag]


# -- the consumer ----------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One request as it arrived on the consume channel, and what became of it."""

    channel: Any
    tag: int
    properties: BasicProperties
    body: bytes
    received: float = field(default_factory=time.monotonic)
    summary: Summary = field(default_factory=Summary)
    answer: Optional[Answer] = None
    outcome: str = ""
    redelivered: bool = False  # the broker delivered it before (to this agent or another)

    @property
    def stale(self) -> bool:
        """Its channel has closed: it can no longer be acked, and the broker gives it again.
        (Read by workers too: a closed channel never opens again, so the answer cannot flip back.)"""
        return self.channel is not None and not self.channel.is_open


@dataclass(frozen=True)
class Topology:
    """What to consume and how."""

    queue: str
    exchange: str
    declare: bool
    prefetch: int
    publish_exchange: str
    publish_routing_key: str
    user_id: Optional[str]
    queue_arguments: Dict[str, Any] = field(default_factory=dict)
    reply_exchanges: FrozenSet[str] = frozenset()
    delivery_limit: int = 0  # with a quorum queue: a request delivered this many times is abandoned


class Backoff:
    """Reconnection delays 1, 2, 4... seconds, capped at ``cap``; gives up after ``attempts``
    (None: never, for a source the agent can do without, such as a notification bus).

    Each delay is drawn from the upper half of its step (jitter): the agents of a group that
    lost the same broker node do not all come back in the same instant.
    """

    def __init__(self, cap: float, attempts: Optional[int], draw: Callable[[], float] = random.random) -> None:
        self._cap = cap
        self._attempts = attempts
        self._draw = draw
        self.failures = 0

    @property
    def attempts(self) -> Optional[int]:
        return self._attempts

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> Optional[float]:
        """The delay before the next attempt, or None once every attempt has failed."""
        self.failures += 1
        if self._attempts is not None and self.failures >= self._attempts:
            return None
        step = min(self._cap, 2.0 ** min(self.failures - 1, 64))  # no float overflow when it never gives up
        return step * (0.5 + 0.5 * self._draw())


class Nodes:
    """The broker nodes, tried in turn: after a failure the next node at once; the back-off
    only once every node has failed in a row (a dead node must not delay the live ones)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.current = 0
        self._failed_in_a_row = 0

    def failed(self) -> bool:
        """Move to the next node; True when every node has just failed in a row (time to back off)."""
        self.current = (self.current + 1) % self.count
        self._failed_in_a_row += 1
        if self._failed_in_a_row < self.count:
            return False
        self._failed_in_a_row = 0
        return True

    def succeeded(self) -> None:
        self._failed_in_a_row = 0


# Channel closes that retrying cannot fix while starting: no permission, no such exchange or
# queue, a queue declared earlier with other arguments.
_PERMANENT_CHANNEL_CODES = (403, 404, 406)


class Consumer:
    """Connects, declares, consumes, answers, acks; reconnects until told to stop."""

    def __init__(
        self,
        parameters: List[pika.ConnectionParameters],
        topology: Topology,
        ioloop: IOLoop,
        backoff: Backoff,
        broker: BrokerSettings,
        on_consuming: Callable[[], None] = lambda: None,
        status: Optional[AgentStatus] = None,
        metrics: Optional[AgentMetrics] = None,
    ) -> None:
        self._parameters = parameters
        self._metrics = metrics or AgentMetrics()
        self._nodes = Nodes(len(parameters))
        self._topology = topology
        self._dispatcher: "Optional[Dispatcher]" = None
        self._ioloop = ioloop
        self._backoff = backoff
        self._broker = broker
        self.status = status or AgentStatus(single_active=False)
        self._on_consuming = on_consuming
        self._publisher = ReplyPublisher(self._on_reply_settled)
        self._acks = Acks(lambda flush: self._connection.at_turn_end(flush))
        self._reply_policy = ReplyPolicy(
            topology.publish_exchange, topology.reply_exchanges, topology.exchange, topology.queue
        )
        self._connection: Any = None
        self._channel: Any = None
        self._consumer_tag: Optional[str] = None
        self._reconnect_timer: Any = None
        self._stopping = False
        self._consumed = False  # once consuming worked, broker refusals are retried, not fatal
        self._step = ""
        self.exit_code = 0

    # -- connection -------------------------------------------------------------------------

    def start(self, dispatcher: "Dispatcher") -> None:
        """Open the first connection and hand every delivery to ``dispatcher``; the caller runs the IOLoop."""
        self._dispatcher = dispatcher
        LOG.info("connecting to %s", self._broker.describe())
        self._connect()

    @property
    def _endpoint(self) -> Tuple[str, int]:
        parameters = self._parameters[self._nodes.current]
        return parameters.host, parameters.port

    @property
    def _url(self) -> str:
        """The node in use now, as a password-free URL for log lines."""
        return self._broker.describe(self._endpoint)

    def _connect(self) -> None:
        self._reconnect_timer = None
        self._connection = CoalescingConnection(
            self._parameters[self._nodes.current],
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: Any) -> None:
        self.status.connected(host_port(*self._endpoint))
        self._publisher.attach(connection)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, _connection: Any, error: Exception) -> None:
        self._connection = None
        failure = explain_connection_failure(error, self._broker, self._endpoint)
        if failure.permanent and not self._consumed:
            self._fail(f"cannot log in to the broker at {self._url}: {failure.reason}")
            return
        self._retry_or_give_up(f"cannot connect to the broker at {self._url}", failure.reason)

    def _on_connection_closed(self, _connection: Any, reason: Exception) -> None:
        self._connection = self._channel = self._consumer_tag = None
        self._publisher.detach()
        self.status.disconnected()
        if self._stopping:
            self._finish_stop()
            return
        self._retry_or_give_up(f"lost the connection to the broker at {self._url}", str(reason) or "closed")

    def _retry_or_give_up(self, what: str, reason: str) -> None:
        """One log line per failed attempt: what failed, where, why, which attempt, what next."""
        if self._stopping:
            self._finish_stop()
            return
        if not self._nodes.failed():
            LOG.warning("%s: %s; trying %s now", what, reason, self._url)
            self._reconnect_timer = self._ioloop.call_later(0, self._connect)
            return
        delay = self._backoff.next_delay()
        attempt = f"attempt {self._backoff.failures} of {self._backoff.attempts}"
        if self._nodes.count > 1:
            attempt += f", every one of the {self._nodes.count} nodes failed"
        if delay is None:
            LOG.error("%s (%s): %s; giving up", what, attempt, reason)
            self.exit_code = 1
            self.stop()
            return
        again = f"from {self._url} " if self._nodes.count > 1 else ""
        LOG.warning("%s (%s): %s; retrying %sin %.1f s", what, attempt, reason, again, delay)
        self._reconnect_timer = self._ioloop.call_later(delay, self._connect)

    def _fail(self, message: str) -> None:
        """A configuration error found while starting: log it and exit 2 (systemd does not restart)."""
        LOG.error("%s", message)
        self.exit_code = 2
        self.stop()

    # -- consume channel ----------------------------------------------------------------------

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        self._acks.use(channel)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        if self._topology.declare:
            self._step = f"declare the queue '{self._topology.queue}'"
            channel.queue_declare(
                self._topology.queue, durable=True, exclusive=False, auto_delete=False,
                arguments=self._topology.queue_arguments or None, callback=self._on_queue_declared,
            )
        else:
            self._set_qos()

    def _on_queue_declared(self, _frame: Any) -> None:
        if self._topology.exchange:
            self._step = f"bind the queue '{self._topology.queue}' to the exchange '{self._topology.exchange}'"
            self._channel.queue_bind(
                self._topology.queue, self._topology.exchange, callback=lambda _frame: self._set_qos()
            )
        else:
            self._set_qos()

    def _set_qos(self) -> None:
        self._channel.basic_qos(prefetch_count=self._topology.prefetch, callback=self._on_qos)

    def _on_qos(self, _frame: Any) -> None:
        if self._stopping:
            self._maybe_close()
            return
        self._step = f"consume from the queue '{self._topology.queue}'"
        self._consumer_tag = self._channel.basic_consume(
            self._topology.queue, self._on_message, callback=self._on_consume_ok
        )

    def _on_consume_ok(self, _frame: Any) -> None:
        """Only now is the agent serving: say so, reset the back-off, tell systemd once."""
        LOG.info("consuming from queue %s on %s", self._topology.queue, self._url)
        self._backoff.reset()
        self._nodes.succeeded()
        self.status.consuming()
        if not self._consumed:
            self._consumed = True
            self._on_consuming()

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        if channel is not self._channel:
            return
        self._channel = self._consumer_tag = None
        code = getattr(reason, "reply_code", None)
        if code in _PERMANENT_CHANNEL_CODES and not self._consumed and not self._stopping:
            self._fail(f"the broker at {self._url} refused to {self._step}: {_channel_hint(reason, self._topology)}")
            return
        if self._connection is not None and self._connection.is_open:
            LOG.warning("consume channel closed: %s; reconnecting", reason)
            self._connection.close()

    def _on_cancelled_by_broker(self, _frame: Any) -> None:
        LOG.warning("the broker cancelled the consumer (queue deleted?); reconnecting")
        if self._channel is not None and self._channel.is_open:
            self._channel.close()

    # -- messages -----------------------------------------------------------------------------

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        delivery = Delivery(channel, method.delivery_tag, properties, body, redelivered=bool(method.redelivered))
        self._acks.delivered(delivery.tag)
        self.status.delivered(method.redelivered)
        self._metrics.received()
        address = self._address(properties)
        refusal = address and self._reply_policy.refusal(address)
        if refusal:  # not run: its answer could only go where the requester may not send it
            self.reply_and_ack(delivery, Answer(None, f"refused: {refusal}", logging.WARNING), False)
        else:
            self._dispatcher.handle(delivery)

    def _address(self, properties: Any) -> Optional[ReplyAddress]:
        return reply_address(properties, self._topology.publish_exchange, self._topology.publish_routing_key)

    def reply_and_ack(self, delivery: Delivery, answer: Answer, duplicate: bool) -> None:
        """I/O thread: publish the answer (if any, and if there is an address), ack once it is confirmed.

        ``duplicate``: the request was answered before (or joined one running): the log says so.
        """
        delivery.answer = answer
        delivery.outcome = f"duplicate, {answer.outcome}" if duplicate else answer.outcome
        address = self._address(delivery.properties)
        if not self._is_current(delivery):
            self._end(delivery, answer, delivery.outcome, "not acked: its channel is gone, the broker redelivers it")
        elif answer.body is None or address is None:
            self._ack(delivery, "no reply" if answer.body is None else "no reply address, nothing sent", "")
        else:
            properties = reply_properties(delivery.properties, self._topology.user_id)
            self._publisher.publish(address, properties, answer.body, delivery)
        self._maybe_close()

    def _on_reply_settled(self, ticket: Any, failure: str) -> None:
        """The publisher's word on one message: confirmed (``""``) or given up (why). A reply's
        ticket is its request's delivery; an unsolicited message's, the callback to tell."""
        if isinstance(ticket, Delivery):
            self._ack(ticket, "answered", failure)
        else:
            ticket(failure)
            self._maybe_close()

    def publish_unsolicited(self, exchange: str, routing_key: str, properties: BasicProperties, body: bytes,
                            settled: Callable[[str], None]) -> None:
        """I/O thread: publish a message no request asked for (a change event) on the reply channel,
        with the same confirms; ``settled("")`` once the broker confirmed it, else ``settled(why)``
        (also when the connection is lost before: the caller decides whether to send it again)."""
        self._publisher.publish(ReplyAddress(exchange, routing_key), properties, body, settled)

    def _ack(self, delivery: Delivery, how: str, failure: str) -> None:
        answer, outcome = delivery.answer, delivery.outcome
        if not self._is_current(delivery):
            self._end(delivery, answer, outcome, f"not acked ({failure}): the broker redelivers it")
        else:
            self._acks.answered(delivery.tag)
            self._end(delivery, answer, outcome, failure or how)
        self._maybe_close()

    @property
    def _busy(self) -> bool:
        return self._dispatcher is not None and self._dispatcher.busy

    def _is_current(self, delivery: Delivery) -> bool:
        return delivery.channel is self._channel and delivery.channel.is_open

    def _end(self, delivery: Delivery, answer: Answer, outcome: str, how: str) -> None:
        """A request's end (answered, acked unanswered, or left to the broker): counted and logged."""
        self._metrics.finished(delivery.summary.action, answer, time.monotonic() - delivery.received)
        self._log(delivery, answer, outcome, how)

    @staticmethod
    def _log(delivery: Delivery, answer: Answer, outcome: str, how: str) -> None:
        """One logfmt line per request, at the answer's level (failures are WARNING or ERROR);
        not even formatted when that level is not logged."""
        if not LOG.isEnabledFor(answer.level):
            return
        summary = delivery.summary
        LOG.log(answer.level, "%s", _logfmt(
            action=summary.action, cm=summary.cm, vm=summary.vm, user=summary.user,
            corr=delivery.properties.correlation_id, outcome=outcome, reply=how,
            duration=f"{(time.monotonic() - delivery.received) * 1000:.0f}ms",
        ))

    # -- stopping -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking requests, finish and answer those in flight, then close (I/O thread)."""
        if self._stopping:
            return
        self._stopping = True
        LOG.info("stopping: no new requests; finishing the ones in flight")
        if self._reconnect_timer is not None:
            self._ioloop.remove_timeout(self._reconnect_timer)
            self._reconnect_timer = None
        if self._channel is not None and self._consumer_tag is not None:
            self._channel.basic_cancel(self._consumer_tag, callback=lambda _frame: self._maybe_close())
            self._consumer_tag = None
        else:
            self._maybe_close()

    def _maybe_close(self) -> None:
        if not self._stopping or self._busy or self._publisher.pending:
            return
        if self._connection is not None and self._connection.is_open:
            self._acks.flush()
            self._connection.close()
        elif self._connection is None or self._connection.is_closed:
            self._finish_stop()

    def _finish_stop(self) -> None:
        if self._busy:
            return  # a worker is still running; its answer calls _maybe_close again
        LOG.info("stopped")
        self._ioloop.stop()



def _channel_hint(reason: Exception, topology: Topology) -> str:
    """The broker's words, plus the setting to change."""
    code, text = getattr(reason, "reply_code", "?"), getattr(reason, "reply_text", str(reason))
    hints = {
        403: "the user lacks the permission: grant it configure/write/read on the queue and read on the exchange",
        404: (f"check [rabbitmq] exchange ('{topology.exchange}')" if topology.declare else
              "the queue does not exist: create it, or set [agent] declare = true"),
        406: ("the queue exists with other arguments (queue_type, consumers, delivery_limit, queue_expires?): "
              f"set them as they were, or recreate it (rabbitmqctl delete_queue {topology.queue}; "
              "README: moving a classic queue to quorum)"),
    }
    return f"{code} {text}; {hints.get(code, 'see the broker log')}"
