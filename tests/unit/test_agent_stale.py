"""A request whose channel closed while it waited for a worker is not started: the broker gives
it again (to another agent of the group, or to this one after a reconnect), so starting it here
too would do its effect twice."""

import json
import threading

from pika import BasicProperties

from cloudmanagers_plugin.agent.admission import NOT_RUN, Gate, HostFilter
from cloudmanagers_plugin.agent.execution import AnswerCache, Dispatcher, OrderedPool, cached_weight
from cloudmanagers_plugin.agent.metrics import outcome_label
from cloudmanagers_plugin.agent.transport import Delivery

WAIT = 10  # seconds an event may take before the test fails (never a measured duration)


class Channel:
    def __init__(self):
        self.is_open = True


class HeldController:
    """Runs updates; the first one waits until the test lets it go."""

    def __init__(self):
        self.ran, self.entered, self.release = [], threading.Event(), threading.Event()

    def process(self, message):
        self.ran.append(message["attributes"]["status"])
        if len(self.ran) == 1:
            self.entered.set()
            self.release.wait(WAIT)
        return {"uuid": "agent", "collection": "cloudmanagers", "resource_id": "os", "status": {}}


class Replies:
    def __init__(self):
        self.answers, self.lock, self.count = [], threading.Lock(), threading.Semaphore(0)

    def reply_and_ack(self, delivery, answer, duplicate):
        with self.lock:
            self.answers.append((delivery.tag, answer))
        self.count.release()


def update(status):
    return json.dumps({"collection": "cloudmanagers", "action": "update", "id": "os",
                       "attributes": {"name": "web", "status": status}}).encode()


def dispatcher(controller, replies, call_in_loop=lambda callback: callback()):
    pool = OrderedPool(4)
    subject = Dispatcher(Gate("agent", "cloudmanagers", HostFilter("agent"), None, 0), controller, pool,
                         AnswerCache(16, 1 << 20, cached_weight), call_in_loop, 1 << 20, replies)
    return subject, pool


class Loop:
    """The I/O thread's queue of callbacks, run by the test when it says so."""

    def __init__(self):
        self.callbacks, self.posted = [], threading.Semaphore(0)

    def call(self, callback):
        self.callbacks.append(callback)
        self.posted.release()

    def turn(self):
        assert self.posted.acquire(timeout=WAIT)
        self.callbacks.pop(0)()


def test_a_queued_change_whose_channel_closed_is_not_started_and_not_acked():
    controller, replies = HeldController(), Replies()
    subject, pool = dispatcher(controller, replies)
    channel = Channel()
    subject.handle(Delivery(channel, 1, BasicProperties(correlation_id="stop"), update("SHUTOFF")))
    assert controller.entered.wait(WAIT)
    subject.handle(Delivery(channel, 2, BasicProperties(correlation_id="pause"), update("PAUSED")))
    channel.is_open = False  # the connection was lost: both go back to the broker
    controller.release.set()
    assert all(replies.count.acquire(timeout=WAIT) for _ in range(2))
    pool.shutdown()
    assert controller.ran == ["SHUTOFF"]  # the one running could not be stopped; the queued one never started
    answers = dict(replies.answers)
    assert answers[2] is NOT_RUN and outcome_label(answers[2]) == "not_run"
    assert not subject.busy


def test_a_redelivery_that_joined_a_stale_request_while_it_was_dropped_runs_on_the_new_channel():
    controller, replies, loop = HeldController(), Replies(), Loop()
    controller.release.set()
    subject, pool = dispatcher(controller, replies, loop.call)
    old, new = Channel(), Channel()
    old.is_open = False  # the connection was lost just after "pause" came in
    subject.handle(Delivery(old, 2, BasicProperties(correlation_id="pause"), update("PAUSED")))
    assert loop.posted.acquire(timeout=WAIT)  # its worker found it stale and did not run it
    loop.posted.release()
    # after a reconnect the broker gives "pause" again, before the I/O thread drops its stale twin
    subject.handle(Delivery(new, 7, BasicProperties(correlation_id="pause"), update("PAUSED")))
    loop.turn()  # the stale delivery ends unacked; the live one is handled afresh
    loop.turn()  # its answer
    pool.shutdown()
    assert controller.ran == ["PAUSED"]  # run once, for the live delivery
    answers = dict(replies.answers)
    assert answers[2] is NOT_RUN
    assert answers[7].body is not None and answers[7].outcome == "ok"
    assert not subject.busy


def test_a_request_with_a_live_delivery_runs_even_if_another_of_its_deliveries_is_stale():
    controller, replies = HeldController(), Replies()
    subject, pool = dispatcher(controller, replies)
    old, new = Channel(), Channel()
    subject.handle(Delivery(old, 1, BasicProperties(correlation_id="stop"), update("SHUTOFF")))
    assert controller.entered.wait(WAIT)
    subject.handle(Delivery(old, 2, BasicProperties(correlation_id="pause"), update("PAUSED")))
    old.is_open = False
    subject.handle(Delivery(new, 7, BasicProperties(correlation_id="pause"), update("PAUSED")))  # joins it
    controller.release.set()
    assert all(replies.count.acquire(timeout=WAIT) for _ in range(3))
    pool.shutdown()
    assert controller.ran == ["SHUTOFF", "PAUSED"]
    assert dict(replies.answers)[7].outcome == "ok"
