"""The agent's AMQP life cycle on pika's SelectConnection, in the style of pika's asynchronous
consumer example: one small callback per AMQP step, explicit acks, clean stop, and reconnection
with back-off.

One IOLoop lives for the whole run and every connection is built on it, so worker threads can
always hand results back with ``add_callback_threadsafe``, even across reconnections.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import pika
from pika.adapters.select_connection import IOLoop

from .dispatcher import Delivery, Dispatcher
from .gate import Answer
from .publisher import ReplyPublisher
from .replies import reply_address, reply_properties

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


class Backoff:
    """Reconnection delays 1, 2, 4... seconds, capped at ``cap``; gives up after ``attempts``."""

    def __init__(self, cap: float, attempts: int) -> None:
        self._cap = cap
        self._attempts = attempts
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> Optional[float]:
        """The delay before the next attempt, or None once every attempt has failed."""
        self.failures += 1
        if self.failures >= self._attempts:
            return None
        return min(self._cap, 2.0 ** (self.failures - 1))


class Consumer:
    """Connects, declares, consumes, answers, acks; reconnects until told to stop."""

    def __init__(
        self,
        parameters: pika.ConnectionParameters,
        topology: Topology,
        dispatcher: Dispatcher,
        ioloop: IOLoop,
        backoff: Backoff,
    ) -> None:
        self._parameters = parameters
        self._topology = topology
        self._dispatcher = dispatcher
        self._ioloop = ioloop
        self._backoff = backoff
        self._publisher = ReplyPublisher()
        self._connection: Any = None
        self._channel: Any = None
        self._consumer_tag: Optional[str] = None
        self._reconnect_timer: Any = None
        self._stopping = False
        self.exit_code = 0

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the first connection; the caller runs the IOLoop."""
        self._connect()

    def _connect(self) -> None:
        self._reconnect_timer = None
        LOG.info("connecting to %s:%s", self._parameters.host, self._parameters.port)
        self._connection = pika.SelectConnection(
            self._parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: Any) -> None:
        LOG.info("connected; consuming from queue %s", self._topology.queue)
        self._backoff.reset()
        self._publisher.attach(connection)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, _connection: Any, error: Exception) -> None:
        LOG.warning("cannot connect to the broker: %s", error or "connection refused")
        self._connection = None
        self._retry_or_give_up()

    def _on_connection_closed(self, _connection: Any, reason: Exception) -> None:
        self._connection = self._channel = self._consumer_tag = None
        self._publisher.detach()
        if self._stopping:
            self._finish_stop()
            return
        LOG.warning("connection to the broker lost: %s", reason)
        self._retry_or_give_up()

    def _retry_or_give_up(self) -> None:
        if self._stopping:
            self._finish_stop()
            return
        delay = self._backoff.next_delay()
        if delay is None:
            LOG.error("giving up after %d failed connection attempts", self._backoff.failures)
            self.exit_code = 1
            self.stop()
            return
        LOG.info("reconnecting in %.1f s", delay)
        self._reconnect_timer = self._ioloop.call_later(delay, self._connect)

    # -- consume channel ----------------------------------------------------------------------

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        if self._topology.declare:
            channel.queue_declare(
                self._topology.queue, durable=True, exclusive=False, auto_delete=False,
                callback=self._on_queue_declared,
            )
        else:
            self._set_qos()

    def _on_queue_declared(self, _frame: Any) -> None:
        if self._topology.exchange:
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
        self._consumer_tag = self._channel.basic_consume(self._topology.queue, self._on_message)

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        if channel is not self._channel:
            return
        self._channel = self._consumer_tag = None
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
        self._dispatcher.handle(delivery, self._answer)

    def _answer(self, delivery: Delivery, answer: Answer, note: str) -> None:
        """Publish the answer (if any, and if there is an address), then ack once confirmed."""
        outcome = f"{note}, {answer.outcome}" if note else answer.outcome
        address = reply_address(
            delivery.properties, self._topology.publish_exchange, self._topology.publish_routing_key
        )
        if not self._is_current(delivery):
            self._log(delivery, outcome, "not acked: its channel is gone, the broker redelivers it")
        elif answer.body is None or address is None:
            reason = "no reply" if answer.body is None else "no reply address, nothing sent"
            self._ack(delivery, outcome, reason, "")
        else:
            properties = reply_properties(delivery.properties, self._topology.user_id)
            self._publisher.publish(
                address, properties, answer.body,
                lambda failure: self._ack(delivery, outcome, "answered", failure),
            )
        self._maybe_close()

    def _ack(self, delivery: Delivery, outcome: str, how: str, failure: str) -> None:
        if not self._is_current(delivery):
            self._log(delivery, outcome, f"not acked ({failure}): the broker redelivers it")
        else:
            delivery.channel.basic_ack(delivery.tag)
            self._log(delivery, outcome, failure or how)
        self._maybe_close()

    def _is_current(self, delivery: Delivery) -> bool:
        return delivery.channel is self._channel and delivery.channel.is_open

    @staticmethod
    def _log(delivery: Delivery, outcome: str, how: str) -> None:
        summary = delivery.summary
        LOG.info(
            "action=%s cm=%s vm=%s user=%s corr=%s outcome=%r reply=%r duration=%.0fms",
            summary.action, summary.cm, summary.vm, summary.user, delivery.properties.correlation_id, outcome, how,
            (time.monotonic() - delivery.received) * 1000,
        )

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

