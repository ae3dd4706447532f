"""The agent's AMQP life cycle on pika's SelectConnection, in the style of pika's asynchronous
consumer example: one small callback per AMQP step, explicit acks, clean stop, and reconnection
with back-off.

One IOLoop lives for the whole run and every connection is built on it, so worker threads can
always hand results back with ``add_callback_threadsafe``, even across reconnections.

Until the first consume-ok, a refusal that waiting cannot fix (login, vhost, a missing exchange
or queue, a permission the user lacks) is a configuration error: the agent exits 2, which the
systemd unit does not restart, instead of retrying for hours. After that, every failure is
retried with back-off, which only resets once consuming works again.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Optional

import pika
from pika.adapters.select_connection import IOLoop

from . import logfmt
from .broker import explain_connection_failure
from .dispatcher import Delivery, Dispatcher
from .gate import Answer
from .publisher import ReplyPublisher
from .replies import ReplyAddress, ReplyPolicy, reply_address, reply_properties
from .settings import BrokerSettings

LOG = logging.getLogger("cloudmanagers_plugin.agent")


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


class Backoff:
    """Reconnection delays 1, 2, 4... seconds, capped at ``cap``; gives up after ``attempts``."""

    def __init__(self, cap: float, attempts: int) -> None:
        self._cap = cap
        self._attempts = attempts
        self.failures = 0

    @property
    def attempts(self) -> int:
        return self._attempts

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> Optional[float]:
        """The delay before the next attempt, or None once every attempt has failed."""
        self.failures += 1
        if self.failures >= self._attempts:
            return None
        return min(self._cap, 2.0 ** (self.failures - 1))


# Channel closes that retrying cannot fix while starting: no permission, no such exchange or
# queue, a queue declared earlier with other arguments.
_PERMANENT_CHANNEL_CODES = (403, 404, 406)


class Consumer:
    """Connects, declares, consumes, answers, acks; reconnects until told to stop."""

    def __init__(
        self,
        parameters: pika.ConnectionParameters,
        topology: Topology,
        dispatcher: Dispatcher,
        ioloop: IOLoop,
        backoff: Backoff,
        broker: BrokerSettings,
        on_consuming: Callable[[], None] = lambda: None,
    ) -> None:
        self._parameters = parameters
        self._topology = topology
        self._dispatcher = dispatcher
        self._ioloop = ioloop
        self._backoff = backoff
        self._broker = broker
        self._url = broker.describe()
        self._on_consuming = on_consuming
        self._publisher = ReplyPublisher()
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

    def start(self) -> None:
        """Open the first connection; the caller runs the IOLoop."""
        LOG.info("connecting to %s", self._url)
        self._connect()

    def _connect(self) -> None:
        self._reconnect_timer = None
        self._connection = pika.SelectConnection(
            self._parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: Any) -> None:
        self._publisher.attach(connection)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, _connection: Any, error: Exception) -> None:
        self._connection = None
        failure = explain_connection_failure(error, self._broker)
        if failure.permanent and not self._consumed:
            self._fail(f"cannot log in to the broker at {self._url}: {failure.reason}")
            return
        self._retry_or_give_up(f"cannot connect to the broker at {self._url}", failure.reason)

    def _on_connection_closed(self, _connection: Any, reason: Exception) -> None:
        self._connection = self._channel = self._consumer_tag = None
        self._publisher.detach()
        if self._stopping:
            self._finish_stop()
            return
        self._retry_or_give_up(f"lost the connection to the broker at {self._url}", str(reason) or "closed")

    def _retry_or_give_up(self, what: str, reason: str) -> None:
        """One log line per failed attempt: what failed, where, why, which attempt, what next."""
        if self._stopping:
            self._finish_stop()
            return
        delay = self._backoff.next_delay()
        attempt = f"attempt {self._backoff.failures} of {self._backoff.attempts}"
        if delay is None:
            LOG.error("%s (%s): %s; giving up", what, attempt, reason)
            self.exit_code = 1
            self.stop()
            return
        LOG.warning("%s (%s): %s; retrying in %g s", what, attempt, reason, delay)
        self._reconnect_timer = self._ioloop.call_later(delay, self._connect)

    def _fail(self, message: str) -> None:
        """A configuration error found while starting: log it and exit 2 (systemd does not restart)."""
        LOG.error("%s", message)
        self.exit_code = 2
        self.stop()

    # -- consume channel ----------------------------------------------------------------------

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
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
        delivery = Delivery(channel, method.delivery_tag, properties, body)
        address = self._address(properties)
        refusal = address and self._reply_policy.refusal(address)
        if refusal:  # not run: its answer could only go where the requester may not send it
            refused = Answer(None, f"refused: {refusal}", logging.WARNING)
            self._ack(delivery, refused, refused.outcome, "no reply", "")
            return
        self._dispatcher.handle(delivery, self._answer)

    def _address(self, properties: Any) -> Optional[ReplyAddress]:
        return reply_address(properties, self._topology.publish_exchange, self._topology.publish_routing_key)

    def _answer(self, delivery: Delivery, answer: Answer, note: str) -> None:
        """Publish the answer (if any, and if there is an address), then ack once confirmed."""
        outcome = f"{note}, {answer.outcome}" if note else answer.outcome
        address = self._address(delivery.properties)
        if not self._is_current(delivery):
            self._log(delivery, answer, outcome, "not acked: its channel is gone, the broker redelivers it")
        elif answer.body is None or address is None:
            reason = "no reply" if answer.body is None else "no reply address, nothing sent"
            self._ack(delivery, answer, outcome, reason, "")
        else:
            properties = reply_properties(delivery.properties, self._topology.user_id)
            self._publisher.publish(
                address, properties, answer.body,
                lambda failure: self._ack(delivery, answer, outcome, "answered", failure),
            )
        self._maybe_close()

    def _ack(self, delivery: Delivery, answer: Answer, outcome: str, how: str, failure: str) -> None:
        if not self._is_current(delivery):
            self._log(delivery, answer, outcome, f"not acked ({failure}): the broker redelivers it")
        else:
            delivery.channel.basic_ack(delivery.tag)
            self._log(delivery, answer, outcome, failure or how)
        self._maybe_close()

    def _is_current(self, delivery: Delivery) -> bool:
        return delivery.channel is self._channel and delivery.channel.is_open

    @staticmethod
    def _log(delivery: Delivery, answer: Answer, outcome: str, how: str) -> None:
        """One logfmt line per request, at the answer's level (failures are WARNING or ERROR)."""
        summary = delivery.summary
        LOG.log(answer.level, "%s", logfmt.line(
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
        if not self._stopping or self._dispatcher.busy or self._publisher.pending:
            return
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        elif self._connection is None or self._connection.is_closed:
            self._finish_stop()

    def _finish_stop(self) -> None:
        if self._dispatcher.busy:
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
        406: ("the queue exists with other arguments (queue_expires?): delete it "
              f"(rabbitmqctl delete_queue {topology.queue}) or set [agent] queue_expires as it was"),
    }
    return f"{code} {text}; {hints.get(code, 'see the broker log')}"
