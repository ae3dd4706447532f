"""The agent's path without a broker: publisher confirms, the consumer's give-up and broker
cancel, the dispatcher's duplicates and cache, back-off and reply addressing (fake channels)."""

import json
from types import SimpleNamespace

import pika
from pika import BasicProperties
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic

from cloudmanagers_plugin.agent.admission import Gate, HostFilter
from cloudmanagers_plugin.agent.execution import AnswerCache, Dispatcher, cached_weight
from cloudmanagers_plugin.agent.publisher import ReplyPublisher
from cloudmanagers_plugin.agent.settings import BrokerSettings
from cloudmanagers_plugin.agent.transport import (
    Acks, Backoff, Consumer, Delivery, Nodes, ReplyAddress, Topology, reply_address,
)
from cloudmanagers_plugin.request_context import correlation_id, redelivered
from tests.support.agent import FakeController

# -- the publisher ------------------------------------------------------------------------------


class Channel:
    """A reply channel that records what is published; the test confirms, refuses or closes."""

    def __init__(self, connection):
        self.connection, self.published, self.is_open = connection, [], True

    def add_on_close_callback(self, callback):
        self.on_close = callback

    def confirm_delivery(self, on_confirm, callback):
        self.on_confirm = on_confirm
        callback(None)

    def basic_publish(self, exchange, routing_key, body, properties):
        self.published.append(body)

    def confirm(self, tag, multiple=False, ack=True):
        method = (Basic.Ack if ack else Basic.Nack)(delivery_tag=tag, multiple=multiple)
        self.on_confirm(SimpleNamespace(method=method))

    def close_by_broker(self, code=541, text="INTERNAL_ERROR"):
        self.is_open = False
        self.on_close(self, ChannelClosedByBroker(code, text))


class Connection:
    is_open = True

    def __init__(self):
        self.channels = []

    def channel(self, on_open_callback):
        self.channels.append(Channel(self))
        on_open_callback(self.channels[-1])


def publisher_with(*bodies):
    """A publisher on a fake connection with ``bodies`` published to the default exchange."""
    settled = {}
    publisher = ReplyPublisher(lambda ticket, failure: settled.setdefault(ticket, failure))
    connection = Connection()
    publisher.attach(connection)
    for body in bodies:
        publisher.publish(ReplyAddress("", "q"), BasicProperties(), body, body)
    return publisher, connection, settled


def test_an_ack_settles_its_reply_only():
    publisher, connection, settled = publisher_with(b"a", b"b")
    connection.channels[0].confirm(2)
    assert settled == {b"b": ""} and publisher.pending


def test_a_multiple_ack_settles_every_reply_up_to_its_tag():
    publisher, connection, settled = publisher_with(b"a", b"b", b"c")
    connection.channels[0].confirm(2, multiple=True)
    assert settled == {b"a": "", b"b": ""}
    connection.channels[0].confirm(3)
    assert settled[b"c"] == "" and not publisher.pending


def test_a_nack_sends_again_until_the_retry_limit():
    publisher, connection, settled = publisher_with(b"a")
    channel = connection.channels[0]
    for tag in range(1, ReplyPublisher.MAX_FAILURES + 1):
        assert b"a" not in settled
        channel.confirm(tag, ack=False)
    assert channel.published == [b"a"] * ReplyPublisher.MAX_FAILURES
    assert settled[b"a"] == f"the broker refused the reply; reply dropped after {ReplyPublisher.MAX_FAILURES} failures"
    assert not publisher.pending


def test_a_channel_closed_by_the_broker_is_reopened_and_its_replies_sent_again():
    publisher, connection, settled = publisher_with(b"a", b"b")
    connection.channels[0].close_by_broker()
    assert len(connection.channels) == 2 and connection.channels[1].published == [b"a", b"b"]
    connection.channels[1].confirm(2, multiple=True)
    assert settled == {b"a": "", b"b": ""}


def test_replies_pending_when_the_connection_goes_are_given_up():
    publisher, connection, settled = publisher_with(b"a")
    connection.is_open = False
    connection.channels[0].close_by_broker(320, "CONNECTION_FORCED")
    publisher.detach()
    assert settled == {b"a": "connection lost before the reply was confirmed"} and not publisher.pending


def test_messages_to_one_exchange_leave_in_the_order_they_came():
    """Change events are numbered: one handed over before the connection was up must not be passed
    by one handed over while the reply channel opens, nor while their exchange is checked."""

    class SlowConnection(Connection):
        def __init__(self):
            super().__init__()
            self.opening = []

        def channel(self, on_open_callback):
            channel = Channel(self)
            channel.exchange_declare = lambda name, passive, callback: channel.declared.append(callback)
            channel.declared, channel.close = [], lambda: None
            self.channels.append(channel)
            self.opening.append((channel, on_open_callback))

        def open_next(self):
            channel, callback = self.opening.pop(0)
            callback(channel)
            return channel

    publisher = ReplyPublisher(lambda ticket, failure: None)
    address = ReplyAddress("events", "")
    publisher.publish(address, BasicProperties(), b"1", "1")  # no connection yet
    connection = SlowConnection()
    publisher.attach(connection)
    publisher.publish(address, BasicProperties(), b"2", "2")  # the reply channel is opening
    reply_channel = connection.open_next()
    publisher.publish(address, BasicProperties(), b"3", "3")  # the exchange is being checked
    probe = connection.open_next()
    probe.declared[0](None)  # the exchange exists
    assert reply_channel.published == [b"1", b"2", b"3"]


# -- the consumer -------------------------------------------------------------------------------


class Loop:
    def __init__(self):
        self.delays, self.timers, self.stopped = [], [], False

    def call_later(self, delay, callback):
        self.delays.append(delay)
        self.timers.append(delay)
        return delay

    def remove_timeout(self, timer):
        self.timers.remove(timer)

    def stop(self):
        self.stopped = True


def consumer(attempts=3, loop=None):
    topology = Topology("queue", "", True, 1, "", "", None)
    return Consumer([pika.ConnectionParameters()], topology, loop or Loop(), Backoff(4, attempts, draw=lambda: 1.0),
                    BrokerSettings())


def test_the_consumer_gives_up_after_the_last_attempt_and_exits_1():
    loop = Loop()
    subject = consumer(attempts=3, loop=loop)
    for _ in range(3):
        subject._on_connection_open_error(None, ConnectionRefusedError(111, "Connection refused"))
    assert loop.delays == [1.0, 2.0] and subject.exit_code == 1 and loop.stopped


def test_a_broker_cancel_closes_the_channel_so_the_consumer_reconnects():
    subject = consumer()
    channel = SimpleNamespace(is_open=True, closed=False)
    channel.close = lambda: setattr(channel, "closed", True)
    subject._channel = channel
    subject._on_cancelled_by_broker(None)
    assert channel.closed


def test_backoff_doubles_up_to_its_cap_then_gives_up():
    backoff = Backoff(cap=5, attempts=6, draw=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [1, 2, 4, 5, 5, None]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_without_a_limit_never_gives_up():
    backoff = Backoff(cap=5, attempts=None, draw=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(10000)][-3:] == [5, 5, 5]


def test_backoff_jitter_draws_each_delay_from_the_upper_half_of_its_step():
    low, high = Backoff(cap=5, attempts=10, draw=lambda: 0.0), Backoff(cap=5, attempts=10, draw=lambda: 0.999)
    assert [low.next_delay() for _ in range(4)] == [0.5, 1, 2, 2.5]
    assert all(0.99 < delay / step <= 1 for delay, step in zip((high.next_delay() for _ in range(4)), (1, 2, 4, 5)))
    drawn = {Backoff(cap=5, attempts=10).next_delay() for _ in range(50)}  # the real draw: spread, bounded
    assert len(drawn) > 40 and all(0.5 <= delay <= 1 for delay in drawn)


def test_nodes_are_tried_in_turn_and_the_backoff_comes_after_a_whole_round():
    nodes = Nodes(3)
    assert [(nodes.failed(), nodes.current) for _ in range(4)] == [(False, 1), (False, 2), (True, 0), (False, 1)]
    nodes.succeeded()  # consuming on node 1: a later loss tries 2 and 0 before backing off
    assert [nodes.failed() for _ in range(3)] == [False, False, True]


def test_a_lost_node_is_followed_at_once_by_the_next_then_the_round_backs_off():
    loop = Loop()
    subject = Consumer([pika.ConnectionParameters("a", 1), pika.ConnectionParameters("b", 2)],
                       Topology("queue", "", True, 1, "", "", None), loop, Backoff(4, 10, draw=lambda: 1.0),
                       BrokerSettings(host="a:1,b:2"))
    subject._consumed = True
    subject._on_connection_closed(None, ConnectionResetError("node a died"))
    assert loop.delays == [0] and subject._endpoint == ("b", 2) and subject.status.role == "disconnected"
    subject._on_connection_open_error(None, ConnectionRefusedError(111, "Connection refused"))
    assert loop.delays == [0, 1.0] and subject._endpoint == ("a", 1)


# -- the dispatcher -----------------------------------------------------------------------------


class Replies:
    def __init__(self):
        self.sent = []

    def reply_and_ack(self, delivery, answer, duplicate):
        self.sent.append((delivery.tag, answer.body, duplicate))


class HeldPool:
    """Keeps jobs until ``run_all``: a request stays running while duplicates arrive."""

    def __init__(self):
        self.jobs = []

    def submit(self, key, job, shared=False):
        self.jobs.append(job)

    def run_all(self):
        while self.jobs:
            self.jobs.pop(0)()


def test_duplicates_join_the_running_request_and_later_ones_come_from_the_cache():
    controller, pool, replies = FakeController(), HeldPool(), Replies()
    subject = Dispatcher(Gate("agent", "cloudmanagers", HostFilter("agent"), None, 0), controller, pool,
                         AnswerCache(16, 1 << 20, cached_weight), lambda callback: callback(), 1 << 20, replies)
    body = b'{"collection": "cloudmanagers", "action": "create", "id": "cm", "attributes": {"n": 1, "name": "vm"}}'

    def deliver(tag, correlation_id="c1"):
        subject.handle(Delivery(None, tag, BasicProperties(correlation_id=correlation_id, user_id="guest"), body))

    deliver(1)
    deliver(2)  # a redelivery while the first runs: it joins it
    assert subject.busy and not replies.sent
    pool.run_all()
    deliver(3)  # after the answer: from the cache
    deliver(4, correlation_id="c2")  # another request with the same body runs on its own
    pool.run_all()
    assert controller.executions[1] == 2 and not subject.busy
    (_, body_1, dup_1), (_, body_2, dup_2), (_, body_3, dup_3), (_, _body_4, dup_4) = replies.sent
    assert body_1 == body_2 == body_3 and (dup_1, dup_2, dup_3, dup_4) == (False, True, True, False)


# -- reply addressing ---------------------------------------------------------------------------


def address(**properties):
    return reply_address(BasicProperties(**properties), "inbox", "rk")


def test_reply_addressing_follows_the_legacy_rules():
    assert address(headers={"reply_exchange": ""}, reply_to="q") == ReplyAddress("", "q")
    assert address(headers={"reply_exchange": b"x"}, reply_to="q") == ReplyAddress("x", "q")
    assert address(reply_to="q") == ReplyAddress("inbox", "q")
    assert address() == ReplyAddress("inbox", "rk")
    assert address(headers={"reply_exchange": 5}) == ReplyAddress("inbox", "rk")  # not a name: absent
    assert address(headers={"reply_exchange": "x" * 256}) == ReplyAddress("inbox", "rk")  # too long for AMQP
    assert reply_address(BasicProperties(headers={"reply_exchange": ""}), "", "") is None  # nowhere to go


# -- acks ---------------------------------------------------------------------------------------


class AckChannel:
    is_open = True

    def __init__(self):
        self.acks = []

    def basic_ack(self, tag, multiple=False):
        self.acks.append((tag, multiple))


def acks_on(channel, *tags):
    flushes = []
    acks = Acks(flushes.append)
    acks.use(channel)
    for tag in tags:
        acks.delivered(tag)
    return acks, flushes


def test_the_answered_front_goes_as_one_multiple_ack_once_per_loop_turn():
    channel = AckChannel()
    acks, flushes = acks_on(channel, 1, 2, 3, 4)
    for tag in (2, 1, 3):
        acks.answered(tag)
    assert len(flushes) == 1 and channel.acks == []  # nothing sent before the loop turn
    flushes[0]()
    assert channel.acks == [(3, True)]
    acks.answered(4)
    flushes[1]()
    assert channel.acks == [(3, True), (4, False)]


def test_a_long_request_at_the_front_holds_back_no_other_ack():
    channel = AckChannel()
    acks, flushes = acks_on(channel, 1, 2, 3)
    acks.answered(3)
    acks.answered(2)
    flushes[0]()
    assert channel.acks == [(2, False), (3, False)]  # never multiple: 1 is still running
    acks.answered(1)
    flushes[1]()
    assert channel.acks[-1] == (1, False)


def test_acks_for_a_closed_channel_are_not_sent_and_a_new_channel_starts_afresh():
    old, new = AckChannel(), AckChannel()
    acks, flushes = acks_on(old, 1)
    acks.answered(1)
    old.is_open = False
    flushes[0]()
    acks.use(new)
    acks.delivered(1)
    acks.answered(1)
    flushes[1]()
    assert old.acks == [] and new.acks == [(1, False)]


# -- the connection's writes ---------------------------------------------------------------------


class Transport:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(data)


def unconnected():
    """A CoalescingConnection on a loop that never runs, with a transport that records writes."""
    from pika.adapters.select_connection import IOLoop

    from cloudmanagers_plugin.agent.broker import CoalescingConnection

    connection = CoalescingConnection(pika.ConnectionParameters("127.0.0.1", 1), custom_ioloop=IOLoop())
    turn_ends = []
    connection._adapter_call_later = lambda delay, callback: turn_ends.append(callback)  # the loop's turn end
    connection._transport = Transport()
    connection._body_max_length = 4096  # as set by the broker's Connection.Tune
    return connection, turn_ends


def test_the_frames_of_one_loop_turn_go_out_in_one_write_in_their_order():
    connection, turn_ends = unconnected()
    properties = BasicProperties(correlation_id="c1", delivery_mode=2)
    connection._send_method(2, Basic.Publish(exchange="", routing_key="q"), (properties, b'{"status": {}}'))
    connection._send_method(1, Basic.Ack(delivery_tag=7))
    assert connection._transport.writes == [] and len(turn_ends) == 1  # one flush per turn, at its end
    turn_ends[0]()
    publish, ack = pika.frame.Method(2, Basic.Publish(exchange="", routing_key="q")), pika.frame.Method(1, Basic.Ack(7))
    header, body = pika.frame.Header(2, 14, properties), pika.frame.Body(2, b'{"status": {}}')
    assert connection._transport.writes == [publish.marshal() + header.marshal() + body.marshal() + ack.marshal()]
    connection._send_method(1, Basic.Ack(delivery_tag=8))
    assert len(turn_ends) == 2  # the next turn schedules its own flush


def test_what_a_turn_end_callback_emits_goes_out_in_that_turns_write():
    connection, turn_ends = unconnected()
    connection._send_method(1, Basic.Ack(delivery_tag=1))
    connection.at_turn_end(lambda: connection._send_method(1, Basic.Ack(delivery_tag=2)))
    assert len(turn_ends) == 1
    turn_ends[0]()
    first, second = pika.frame.Method(1, Basic.Ack(1)), pika.frame.Method(1, Basic.Ack(2))
    assert connection._transport.writes == [first.marshal() + second.marshal()]


def test_frames_left_when_the_transport_is_gone_are_dropped_like_pikas_own_buffer():
    connection, turn_ends = unconnected()
    connection._send_method(1, Basic.Ack(delivery_tag=1))
    connection._transport = None
    turn_ends[0]()  # no error: the broker redelivers the unacked request


class TurnLoop(Loop):
    """A loop whose ``call_later(0, ...)`` callbacks run when the test ends a turn."""

    def __init__(self):
        super().__init__()
        self.due = []

    def call_later(self, delay, callback):
        self.due.append(callback)
        return super().call_later(delay, callback)

    def turn(self):
        due, self.due = self.due, []
        for callback in due:
            callback()


def test_with_replies_and_acks_batched_per_turn_a_request_is_acked_only_after_its_reply_is_confirmed():
    from cloudmanagers_plugin.agent.admission import Answer

    loop, consume = TurnLoop(), AckChannel()
    subject = consumer(loop=loop)
    subject._connection = SimpleNamespace(at_turn_end=lambda callback: loop.due.append(callback))
    replies = Connection()
    subject._publisher.attach(replies)
    subject._channel = consume
    subject._acks.use(consume)
    deliveries = [Delivery(consume, tag, BasicProperties(reply_to="client", correlation_id=f"c{tag}"), b"{}")
                  for tag in (1, 2, 3)]
    for delivery in deliveries:
        subject._acks.delivered(delivery.tag)
        subject.reply_and_ack(delivery, Answer(b'{"status": {}}', "ok"), False)
    loop.turn()
    assert len(replies.channels[0].published) == 3 and consume.acks == []  # published, not yet confirmed
    replies.channels[0].confirm(2, multiple=True)
    assert consume.acks == []  # the acks wait for the end of the turn
    loop.turn()
    assert consume.acks == [(2, True)]  # one multiple ack for both confirmed replies, none for the third
    replies.channels[0].confirm(3)
    loop.turn()
    assert consume.acks == [(2, True), (3, False)]


def test_the_controller_learns_the_correlation_id_and_the_redelivered_flag():
    """What makes a redelivered create, resize or delete answer as its first run: the agent passes
    the AMQP delivery's correlation id and ``redelivered`` flag beside ``process()``."""
    seen = []

    class Recording(FakeController):
        def process(self, message):
            seen.append((correlation_id(), redelivered()))
            return super().process(message)

    pool, replies = HeldPool(), Replies()
    subject = Dispatcher(Gate("agent", "cloudmanagers", HostFilter("agent"), None, 0), Recording(), pool,
                         AnswerCache(16, 1 << 20, cached_weight), lambda callback: callback(), 1 << 20, replies)
    body = json.dumps({"collection": "cloudmanagers", "action": "delete", "id": "cm1",
                       "attributes": {"name": "vm"}}).encode()
    for tag, (correlation, again) in enumerate([("first", False), ("second", True)], 1):
        subject.handle(Delivery(None, tag, BasicProperties(correlation_id=correlation, user_id="guest"), body,
                                redelivered=again))
    pool.run_all()
    assert seen == [("first", False), ("second", True)] and len(replies.sent) == 2
