"""The agent's defences, tested without a broker: fake channels, fake pools, pure rules.

Each test names the defect of the fault and abuse suite it covers (issue 15).
"""

import logging
import threading
from types import SimpleNamespace

import pytest
from pika import BasicProperties
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic

from cloudmanagers_plugin.agent.admission import Answer, Gate, HostFilter, Permissions, Summary, read_filters
from cloudmanagers_plugin.agent.execution import AnswerCache, Dispatcher, OrderedPool
from cloudmanagers_plugin.agent.publisher import ReplyPublisher
from cloudmanagers_plugin.agent.transport import Consumer, Delivery, ReplyAddress, reply_properties
from cloudmanagers_plugin.errors import BadRequest
from cloudmanagers_plugin.protocol import parse_envelope
from tests.support.agent import FakeController

# -- a broker that publishes in order and closes a channel on a missing exchange -----------------


class FakeChannel:
    def __init__(self, broker, number):
        self.broker, self.number = broker, number
        self.is_open = True
        self._on_close = []
        self._on_confirm = None

    def add_on_close_callback(self, callback):
        self._on_close.append(callback)

    def confirm_delivery(self, on_confirm, callback):
        self._on_confirm = on_confirm
        callback(None)

    def exchange_declare(self, exchange, passive, callback):
        assert passive
        if exchange in self.broker.exchanges:
            callback(None)
        else:
            self._broker_close(404, f"NOT_FOUND - no exchange '{exchange}' in vhost '/'")

    def basic_publish(self, exchange, routing_key, body, properties):
        if not self.is_open:
            return  # the broker ignores what follows a channel error
        if exchange not in self.broker.exchanges:
            self._broker_close(404, f"NOT_FOUND - no exchange '{exchange}' in vhost '/'")
            return
        self.broker.routed.append(body)
        self.broker.unconfirmed.append((self, len([b for c, b in self.broker.published if c is self]) + 1))
        self.broker.published.append((self, body))

    def _broker_close(self, code, text):
        self.broker.closed.append(self.number)
        self.close(ChannelClosedByBroker(code, text))

    def close(self, reason=None):
        if not self.is_open:
            return
        self.is_open = False
        for callback in self._on_close:
            callback(self, reason or ChannelClosedByBroker(200, "Normal shutdown"))

    def confirm_all(self):
        for channel, tag in [entry for entry in self.broker.unconfirmed if entry[0] is self]:
            self._on_confirm(SimpleNamespace(method=Basic.Ack(delivery_tag=tag, multiple=False)))
        self.broker.unconfirmed = [entry for entry in self.broker.unconfirmed if entry[0] is not self]


class FakeBroker:
    """A connection whose channels open at once; ``exchanges`` exist, others do not."""

    is_open = True

    def __init__(self, exchanges):
        self.exchanges = set(exchanges)
        self.channels = []
        self.routed, self.published, self.unconfirmed, self.closed = [], [], [], []

    def channel(self, on_open_callback):
        channel = FakeChannel(self, len(self.channels))
        self.channels.append(channel)
        on_open_callback(channel)


def test_a_missing_reply_exchange_costs_only_its_own_reply():
    """Defect 2: the reply channel used by other replies never closes, nothing is sent twice."""
    broker = FakeBroker({"", "inbox"})
    outcomes = {}
    publisher = ReplyPublisher(lambda number, failure: outcomes.setdefault(number, failure))
    publisher.attach(broker)
    addresses = [ReplyAddress("", "q"), ReplyAddress("missing", "q"), ReplyAddress("inbox", ""),
                 ReplyAddress("", "q"), ReplyAddress("missing", "q"), ReplyAddress("", "q")]
    for number, address in enumerate(addresses):
        publisher.publish(address, BasicProperties(), str(number).encode(), number)
    reply_channel = broker.channels[0]
    assert reply_channel.is_open and 0 not in broker.closed
    reply_channel.confirm_all()
    assert sorted(broker.routed) == [b"0", b"2", b"3", b"5"]  # each once
    assert {number: outcomes[number] for number in (0, 2, 3, 5)} == {0: "", 2: "", 3: "", 5: ""}
    assert "missing" in outcomes[1] and "dropped" in outcomes[4]
    assert not publisher.pending


def test_an_exchange_deleted_after_its_check_duplicates_nothing():
    """Defect 2: replies routed before the failed publish are not sent again."""
    broker = FakeBroker({"", "gone"})
    outcomes = {}
    publisher = ReplyPublisher(lambda number, failure: outcomes.setdefault(number, failure))
    publisher.attach(broker)
    publisher.publish(ReplyAddress("gone", "q"), BasicProperties(), b"checked", "c")
    broker.channels[0].confirm_all()
    broker.exchanges.discard("gone")
    for number, exchange in enumerate(["", "gone", ""]):
        publisher.publish(ReplyAddress(exchange, "q"), BasicProperties(), str(number).encode(), number)
    broker.channels[-1].confirm_all()
    assert broker.routed.count(b"0") == 1 and broker.routed.count(b"2") == 1
    assert "does not exist" in outcomes[1] and outcomes[2] == ""


def test_replies_are_persistent():
    """Defect 1: a reply parked in a durable queue survives a broker restart."""
    request = BasicProperties(correlation_id="c1", delivery_mode=2)
    assert reply_properties(request, "agent").delivery_mode == 2
    assert reply_properties(BasicProperties(correlation_id="c2"), None).delivery_mode == 2


# -- reply addresses ---------------------------------------------------------------------------


def test_reply_exchanges_are_an_allow_list():
    """Defect 3: "", publish_exchange and [agent] reply_exchanges; never the consumed exchange."""
    from cloudmanagers_plugin.agent.transport import ReplyPolicy

    policy = ReplyPolicy("inbox", frozenset({"replies"}), "amq.fanout", "agent-1")
    assert policy.refusal(ReplyAddress("", "amq.gen-1")) is None
    assert policy.refusal(ReplyAddress("inbox", "")) is None
    assert policy.refusal(ReplyAddress("replies", "k")) is None
    for exchange in ("amq.fanout", "amq.topic", "amq.direct", "elsewhere"):
        assert "not allowed" in policy.refusal(ReplyAddress(exchange, "k"))
    assert "own queue" in policy.refusal(ReplyAddress("", "agent-1"))
    assert ReplyPolicy("amq.fanout", frozenset(), "amq.fanout", "a").refusal(ReplyAddress("amq.fanout", ""))


def test_the_consumed_exchange_is_refused_even_when_listed(tmp_path):
    """Defect 3: the settings refuse a reply_exchanges naming [rabbitmq] exchange."""
    from cloudmanagers_plugin.agent.settings import load_settings
    from cloudmanagers_plugin.errors import ConfigError

    path = tmp_path / "agent.conf"
    path.write_text("[rabbitmq]\nexchange = amq.fanout\n[agent]\nreply_exchanges = replies, amq.fanout\n")
    with pytest.raises(ConfigError, match="reply_exchanges"):
        load_settings(str(path))


# -- permissions -------------------------------------------------------------------------------


def rules(tmp_path, text):
    path = tmp_path / "permissions.conf"
    path.write_text(text)
    return Permissions.load(str(path))


def test_a_request_without_user_id_is_anonymous(tmp_path):
    """Defect 4: leaving out user_id matches no user rule, '*' included."""
    checked = rules(tmp_path, "mallory cloudmanagers * R\n* cloudmanagers devcloud CRUD\n")
    assert checked.allows("alice", "cloudmanagers", "devcloud", "update")
    assert not checked.allows(None, "cloudmanagers", "devcloud", "update")
    assert not checked.allows("", "cloudmanagers", "devcloud", "read")


def test_anonymous_rules_match_only_anonymous_requests(tmp_path):
    """Defect 4: '(anonymous)' rules, for requests that carry no user_id."""
    checked = rules(tmp_path, "(anonymous) cloudmanagers * R\nops cloudmanagers * CRUD\n")
    assert checked.allows(None, "cloudmanagers", "devcloud", "read")
    assert not checked.allows(None, "cloudmanagers", "devcloud", "delete")
    assert not checked.allows("mallory", "cloudmanagers", "devcloud", "read")
    assert checked.allows("ops", "cloudmanagers", "devcloud", "delete")


def test_the_denial_says_the_request_was_anonymous(tmp_path):
    gate = Gate("agent", "cloudmanagers", HostFilter("agent"), rules(tmp_path, "* * * CRUD\n"), 0)
    body = b'{"collection": "cloudmanagers", "action": "read", "id": "cm"}'
    assert gate.admit(body, "alice").request is not None
    denied = gate.admit(body, None)
    assert denied.request is None and b"anonymous request (no user_id)" in denied.answer.body


# -- size --------------------------------------------------------------------------------------


class InlinePool:
    """Runs admissions and executions at once, on the calling thread, recording their keys."""

    def __init__(self):
        self.keys = []

    def submit(self, key, job, shared=False):
        self.keys.append(key)
        job()


def cached_weight(entry):
    from cloudmanagers_plugin.agent.execution import cached_weight as weigh

    return weigh(entry)


class Replies:
    """Stands in for the consumer: records what the dispatcher asks it to reply and ack."""

    def __init__(self, then=lambda: None):
        self.answers, self._then = [], then

    def reply_and_ack(self, delivery, answer, duplicate):
        self.answers.append(answer)
        self._then()


def dispatcher(controller=None, max_bytes=1024, cache=None, pool=None, gate=None, consumer=None):
    return Dispatcher(
        gate or Gate("agent", "cloudmanagers", HostFilter("agent"), None, 0), controller or FakeController(),
        pool or InlinePool(), cache or AnswerCache(16, 1 << 20, cached_weight), lambda callback: callback(), max_bytes,
        consumer or Replies(),
    )


def delivery(body, correlation_id="c1", user="guest"):
    return Delivery(None, 1, BasicProperties(correlation_id=correlation_id, user_id=user), body)


def request_body(action="read", cm="cm1", **attributes):
    import json

    return json.dumps({"collection": "cloudmanagers", "action": action, "id": cm, "attributes": attributes}).encode()


def test_a_body_over_max_message_bytes_gets_an_error_and_is_not_decoded():
    """Defect 5: refused with a clear error reply, nothing run, nothing kept."""
    controller = FakeController()
    replies = Replies()
    answers = replies.answers
    cache = AnswerCache(16, 1 << 20, cached_weight)
    dispatcher(controller, max_bytes=1000, cache=cache, consumer=replies).handle(
        delivery(request_body(n="big", pad="x" * 2000)))
    assert len(answers) == 1 and b"max_message_bytes" in answers[0].body and b"over this agent's limit" in answers[0].body
    assert not controller.executions and len(cache) == 0


def test_the_answer_cache_is_bounded_by_bytes():
    """Defect 5: ten 1 MB answers never take more than the byte budget."""
    cache = AnswerCache(1024, 3_000_000, cached_weight)
    for number in range(10):
        cache.put(number, (Summary(), Answer(b"x" * 1_000_000, "ok")))
    assert cache.bytes <= 3_000_000 and len(cache) == 2 and 9 in cache and 0 not in cache
    cache.put("huge", (Summary(), Answer(b"x" * 4_000_000, "ok")))
    assert "huge" not in cache and cache.bytes <= 3_000_000


# -- the I/O thread ----------------------------------------------------------------------------


def test_requests_are_judged_on_a_worker_not_on_the_io_thread():
    """Defect 6: decoding and filters run on the pool; the I/O thread only hashes the body."""
    io_thread = threading.current_thread()
    judged_on = []

    class RecordingGate(Gate):
        def admit(self, *args):
            judged_on.append(threading.current_thread())
            return super().admit(*args)

    pool = OrderedPool(2)
    done = threading.Event()
    replies = Replies(then=done.set)
    answers = replies.answers
    gate = RecordingGate("agent", "cloudmanagers", HostFilter("agent"), None, 0)
    subject = dispatcher(pool=pool, gate=gate, consumer=replies)
    subject.handle(delivery(request_body(n=1)))
    assert done.wait(10)
    pool.shutdown()
    assert judged_on and judged_on[0] is not io_thread
    assert b'"n": 1' in answers[0].body


def test_admissions_keep_arrival_order_for_one_vm():
    """Defect 6: admissions share one ordered lane, so one VM's requests keep their order."""
    pool = InlinePool()
    subject = dispatcher(pool=pool)
    subject.handle(delivery(request_body("create", name="vm1", n=1), "a"))
    subject.handle(delivery(request_body("delete", name="vm1", n=2), "b"))
    assert pool.keys == [("admission",), ("cm1", "vm1"), ("admission",), ("cm1", "vm1")]


@pytest.mark.parametrize("filters", [{"hostnames": ["*" * 256]}, {"hostnames": ["web*"] * 65}])
def test_filter_values_are_capped(filters):
    """Defect 6: a huge glob is refused before any matching."""
    with pytest.raises(BadRequest, match="at most"):
        read_filters({"filters": filters})


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vm1", " vm1", "vm1 ", "\tvm1\n", "\u2003vm1"])
def test_a_name_is_normalised_where_the_request_is_read(name):
    """Defect 7: every whitespace variant means one VM: one ordering key, one name for the controller."""
    request = parse_envelope(
        {"collection": "cloudmanagers", "action": "create", "id": "cm", "attributes": {"name": name}}, "cloudmanagers")
    assert request.vm_name == "vm1" and request.message["attributes"]["name"] == "vm1"


def test_whitespace_variants_share_one_ordering_key():
    pool = InlinePool()
    subject = dispatcher(pool=pool)
    for number, name in enumerate(["web", " web", "web\t"]):
        subject.handle(delivery(request_body("create", name=name, n=number), f"c{number}"))
    assert {key for key in pool.keys if key != ("admission",)} == {("cm1", "web")}


# -- logs --------------------------------------------------------------------------------------


def test_the_request_log_line_escapes_control_characters(caplog):
    """Defect 10: a newline in id, action, name, user or correlation id cannot forge a line."""
    forged = "x\nINFO action=delete cm=prod outcome='ok'"
    item = Delivery(None, 1, BasicProperties(correlation_id="c\r\n1"), b"")
    item.summary = Summary(action=forged, cm=forged, vm=forged + "\u202e", user=forged)
    with caplog.at_level(logging.INFO):
        Consumer._log(item, Answer(None, "error: 'x\ny'"), "error: 'x\ny'", "answered")
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "\r" not in record.getMessage()
    assert "\u202e" not in record.getMessage() and record.getMessage().count("INFO action=delete") == 4


# -- redelivered reboots -----------------------------------------------------------------------


def test_the_controller_sees_the_request_correlation_id():
    """Defect 12: the agent passes the correlation id beside process(message)."""
    from cloudmanagers_plugin.request_context import correlation_id

    seen = []

    class Recording(FakeController):
        def process(self, message):
            seen.append(correlation_id())
            return super().process(message)

    dispatcher(Recording()).handle(delivery(request_body("update", name="vm", n=1), "corr-42"))
    assert seen == ["corr-42"] and correlation_id() is None
