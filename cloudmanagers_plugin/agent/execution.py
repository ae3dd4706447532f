"""Execution: from a delivery to its answer, exactly once per distinct request.

Only bounded bookkeeping runs on pika's I/O thread: the size check, the digest of a body within
the size limit, the answer cache and the table of running requests (which therefore need no
lock). Decoding and judging a body is work its sender controls, so admissions run on the
worker pool, one at a time and in arrival order; each admitted request is queued from that one
lane to its VM's queue, so changes of one VM (create, update, delete) still run in the order
they arrived, and a read waits for the changes sent before it; reads between two changes run
side by side, as do requests about different VMs, and identical reads running at once share
one run (``SingleFlight``). The answer goes back to the I/O thread, where the consumer replies
and acks (``Consumer.reply_and_ack``).

Duplicates: RabbitMQ redelivers every unacked request after a connection loss, including
requests whose reply was already published (the ack was lost with the connection). Re-running a
``create`` would make a second VM, so the last answers are kept by request (oslo.messaging keeps
a similar message-id cache), and a duplicate of a request that is still running joins it and
receives the same answer when it ends.
"""

import hashlib
import json
import logging
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Hashable, List, Optional, Tuple

from pika import BasicProperties

from ..protocol import Envelope, make_response
from ..request_context import running_request
from .admission import NOT_RUN, Answer, Decision, Gate, Summary, answer_from

if TYPE_CHECKING:
    from .transport import Consumer, Delivery

LOG = logging.getLogger(__name__)

Job = Callable[[], None]
ENTRY_OVERHEAD = 1024  # bytes counted per cached answer besides its body: key, summary, bookkeeping
ADMISSION = ("admission",)  # the ordered pool key every admission shares: one at a time, in order
READS = frozenset({"read", "ping"})  # actions that change nothing: they run side by side on one VM


# -- the answer cache --------------------------------------------------------------------------


def request_key(properties: BasicProperties, body: bytes) -> Optional[Tuple[str, str, bytes]]:
    """Who sent it, its correlation id and a digest of its body; None without a correlation id.

    The sender and the body are part of the key so that another account reusing a correlation
    id neither receives someone else's cached answer nor suppresses a different request.
    """
    if not properties.correlation_id:
        return None
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return (properties.user_id or "", properties.correlation_id, digest)


class AnswerCache:
    """A least-recently-used map from request key to answer (I/O thread only).

    Bounded by count and by bytes: answers are small, except those that echo a large request
    or list a large cloud, and a count alone would let a few of those take hundreds of MiB.
    ``weigh`` gives an entry's size in bytes; an entry larger than the whole budget is not kept.
    """

    def __init__(self, size: int, max_bytes: int, weigh: Callable[[object], int]) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._weigh = weigh
        self._bytes = 0
        self._entries: "OrderedDict[Hashable, Tuple[object, int]]" = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The weight of every entry kept."""
        return self._bytes

    def get(self, key: Hashable) -> object:
        self._entries.move_to_end(key)
        return self._entries[key][0]

    def put(self, key: Hashable, answer: object) -> None:
        weight = self._weigh(answer)
        if key in self._entries:
            self._bytes -= self._entries.pop(key)[1]
        if weight > self._max_bytes:
            return
        self._entries[key] = (answer, weight)
        self._bytes += weight
        while len(self._entries) > self._size or self._bytes > self._max_bytes:
            self._bytes -= self._entries.popitem(last=False)[1][1]


def cached_weight(entry: object) -> int:
    """The bytes an answer cache entry ``(summary, answer)`` holds, roughly."""
    _summary, answer = entry  # type: ignore[misc]
    return len(answer.body or b"") + ENTRY_OVERHEAD


# -- the ordered pool --------------------------------------------------------------------------


class _Lane:
    """One key's jobs: how many of the current group run, whether they share, and what waits."""

    __slots__ = ("running", "shared", "waiting")

    def __init__(self, shared: bool) -> None:
        self.running = 1
        self.shared = shared
        self.waiting: Deque[Tuple[bool, Job]] = deque()


class OrderedPool:
    """Runs jobs on ``workers`` threads; jobs with the same non-None key keep their order.

    Two requests about the same VM (a ``create`` then a ``delete``) must run in the order they
    arrived, or the delete could look before the VM exists. Reads change nothing, so reads
    that arrive one after another (``shared`` jobs) run side by side; a job that is not shared
    waits for every earlier job of its key and holds back every later one, so a read that
    follows a change sees it, and a change never overtakes a read sent before it.
    """

    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-worker")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0  # jobs submitted and not yet finished, queued ones included
        self._lanes: Dict[Hashable, _Lane] = {}
        self._worker = threading.local()  # .started: jobs a running job submitted, not yet started

    def submit(self, key: Optional[Hashable], job: Job, shared: bool = False) -> None:
        """Queue ``job``; it starts after every earlier job with the same key has finished,
        except that a ``shared`` job starts beside the shared jobs just before it."""
        with self._lock:
            self._unfinished += 1
            if key is not None:
                lane = self._lanes.get(key)
                if lane is None:
                    self._lanes[key] = _Lane(shared)
                elif shared and lane.shared and not lane.waiting:
                    lane.running += 1
                else:
                    lane.waiting.append((shared, job))
                    return
        self._start(key, job)

    def _start(self, key: Optional[Hashable], job: Job) -> None:
        started = getattr(self._worker, "started", None)
        if started is not None:  # submitted by a job: its thread may run it next (see _run_in_lane)
            started.append((key, job))
        else:
            self._executor.submit(self._run_in_lane, key, job)

    def _run_in_lane(self, key: Optional[Hashable], job: Optional[Job]) -> None:
        """Run ``job``, then the next job of its key, in this thread: no hand-over per job.

        A job that submits another (an admission queues its request) leaves it to this thread
        when its own key has nothing more to run: a request then goes from admission to
        execution without waking a second thread. When the key has more, the submitted jobs
        go to the executor, so no admission waits behind an execution.
        """
        while job is not None:
            self._worker.started = []
            self._run(job)
            started, self._worker.started = self._worker.started, None
            with self._lock:
                self._unfinished -= 1
                if not self._unfinished:
                    self._idle.notify_all()
            job = self._next(key) if key is not None else None
            if job is None and started:
                key, job = started.pop(0)
            for other_key, other in started:
                self._executor.submit(self._run_in_lane, other_key, other)

    def _next(self, key: Hashable) -> Optional[Job]:
        """After one of ``key``'s jobs: the job this thread runs next, once its whole group ended."""
        with self._lock:
            lane = self._lanes[key]
            lane.running -= 1
            if lane.running:
                return None
            if not lane.waiting:
                del self._lanes[key]
                return None
            lane.shared, job = lane.waiting.popleft()
            group = [job]
            while lane.shared and lane.waiting and lane.waiting[0][0]:
                group.append(lane.waiting.popleft()[1])
            lane.running = len(group)
        for other in group[1:]:
            self._executor.submit(self._run_in_lane, key, other)
        return job

    @staticmethod
    def _run(job: Job) -> None:
        try:
            job()
        except Exception:  # a job that raises must not wedge its key's queue
            LOG.exception("agent job failed")

    def shutdown(self) -> None:
        """Wait for every queued job (and those they submit), then release the threads."""
        with self._idle:
            self._idle.wait_for(lambda: not self._unfinished)
        self._executor.shutdown(wait=True)


# -- back to the I/O thread --------------------------------------------------------------------


class Handback:
    """Thread-safe: ``post`` from any thread; the callbacks run on the loop's thread, in order.

    ``add_callback_threadsafe`` writes to the IOLoop's wake-up pipe on every call; under load
    several workers finish between two loop turns, so their results are queued here and the
    loop is woken once to run them all.
    """

    def __init__(self, call_in_loop: Callable[[Job], None]) -> None:
        self._call_in_loop = call_in_loop
        self._queue: Deque[Job] = deque()
        self._scheduled = False

    def post(self, callback: Job) -> None:
        self._queue.append(callback)
        if not self._scheduled:  # a race only schedules one drain too many, which finds nothing
            self._scheduled = True
            self._call_in_loop(self._drain)

    def _drain(self) -> None:
        self._scheduled = False  # before popping: a callback posted from now on schedules a drain
        while self._queue:
            self._queue.popleft()()


# -- identical reads ---------------------------------------------------------------------------


Deliver = Callable[[Answer], None]


class SingleFlight:
    """Identical reads running at the same time share one run, and so one OpenStack request.

    Any thread. The first caller for a key does the work and gives its answer to every caller
    that asked for the same key meanwhile; those return at once, freeing their workers. Only
    reads that run side by side can meet here: a change of their VM waits for the reads before
    it, and the reads after it start once it has ended, so a shared answer is never older than
    the request that receives it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: Dict[Hashable, List[Deliver]] = {}

    def run(self, key: Hashable, work: Callable[[], Answer], deliver: Deliver) -> None:
        """``deliver(work())``, unless the same work is running: then ``deliver`` its answer."""
        with self._lock:
            waiting = self._flights.get(key)
            if waiting is not None:
                waiting.append(deliver)
                return
            self._flights[key] = [deliver]
        try:
            answer = work()
        finally:
            with self._lock:
                waiting = self._flights.pop(key)
        for each in waiting:
            each(answer)


def read_key(request: Envelope) -> Hashable:
    """What makes two reads the same read: their cloud manager and attributes (the controller
    reads nothing else of a request)."""
    return (request.collection, request.cm_id, json.dumps(request.attributes, sort_keys=True))


def delivery_count(properties: BasicProperties) -> int:
    """How many times a quorum queue delivered this message before (its ``x-delivery-count``)."""
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    count = headers.get("x-delivery-count")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


# -- the dispatcher ----------------------------------------------------------------------------


class Dispatcher:
    """Routes each delivery to one answer, given to the consumer to reply and ack."""

    def __init__(
        self,
        gate: Gate,
        controller: Any,
        pool: OrderedPool,
        cache: AnswerCache,
        call_in_loop: Callable[[Job], None],
        max_message_bytes: int,
        consumer: "Consumer",
        delivery_limit: int = 0,
        on_abandoned: Callable[[], None] = lambda: None,
    ) -> None:
        self._gate = gate
        self._controller = controller
        self._pool = pool
        self._cache = cache
        self._handback = Handback(call_in_loop)
        self._max_bytes = max_message_bytes
        self._consumer = consumer
        self._delivery_limit = delivery_limit
        self._on_abandoned = on_abandoned
        self._running: Dict[Hashable, List["Delivery"]] = {}
        self._reads = SingleFlight()

    @property
    def busy(self) -> bool:
        """True while some request has not come back from admission or the controller."""
        return bool(self._running)

    def handle(self, delivery: "Delivery") -> None:
        """I/O thread: answer ``delivery`` now (too large, cached) or once its request has run."""
        if len(delivery.body) > self._max_bytes:
            self._consumer.reply_and_ack(delivery, self._gate.too_large(len(delivery.body), self._max_bytes), False)
            return
        key = request_key(delivery.properties, delivery.body)
        if key in self._running:
            self._running[key].append(delivery)
            return
        if key is not None and key in self._cache:
            delivery.summary, answer = self._cache.get(key)  # type: ignore[misc]
            self._consumer.reply_and_ack(delivery, answer, True)
            return
        deliveries = delivery_count(delivery.properties)
        if self._delivery_limit and deliveries >= self._delivery_limit:
            decision = self._gate.abandoned(delivery.body, delivery.properties.user_id, deliveries)
            delivery.summary = decision.summary
            self._on_abandoned()
            self._consumer.reply_and_ack(delivery, decision.answer, False)
            return
        running_key = key if key is not None else object()
        self._running[running_key] = [delivery]
        properties, body, redelivered = delivery.properties, delivery.body, delivery.redelivered
        self._pool.submit(ADMISSION, lambda: self._admit(running_key, key, properties, body, redelivered))

    def _admit(self, running_key: Hashable, key: Optional[Hashable], properties: BasicProperties, body: bytes,
               redelivered: bool) -> None:
        """Worker, in the admission lane: judge the body, then queue the request behind its VM's."""
        try:
            decision = self._gate.admit(body, properties.user_id, properties.timestamp)
        except Exception:  # a bug in the checks must still give one answer, and keep the agent serving
            LOG.exception("judging a request failed")
            decision = Decision(Summary(), answer=self._internal_error("", ""))
        request, summary = decision.request, decision.summary
        if request is None:
            answer = decision.answer
            self._handback.post(lambda: self._done(running_key, key, summary, answer))
            return
        order = (request.cm_id, request.vm_name) if request.vm_name else None
        correlation_id = properties.correlation_id
        self._pool.submit(order, lambda: self._execute(running_key, key, summary, request, correlation_id,
                                                       redelivered),
                          shared=request.action in READS)

    def _execute(self, running_key: Hashable, key: Optional[Hashable], summary: Summary, request: Envelope,
                 correlation_id: Optional[str], redelivered: bool) -> None:
        """Worker: run the controller (a read joins an identical one running), then hand the
        answer back to the I/O thread."""
        def deliver(answer: Answer) -> None:
            self._handback.post(lambda: self._done(running_key, key, summary, answer))

        if all(delivery.stale for delivery in list(self._running.get(running_key, ()))):
            self._handback.post(lambda: self._drop_stale(running_key))
            return
        with running_request(correlation_id, redelivered):
            if request.action == "read":
                self._reads.run(read_key(request), lambda: self._process(request), deliver)
            else:
                deliver(self._process(request))

    def _process(self, request: Envelope) -> Answer:
        try:
            return answer_from(self._controller.process(request.message))
        except Exception:  # the contract says process() never raises; the agent must survive if it does
            LOG.exception("the %s controller raised", request.collection)
            return self._internal_error(request.cm_id, request.collection)

    def _internal_error(self, resource_id: str, collection: str) -> Answer:
        reply = make_response(
            self._gate.agent_uuid, resource_id, collection, error="internal error in the agent; see its log"
        )
        return answer_from(reply)

    def _drop_stale(self, running_key: Hashable) -> None:
        """I/O thread: a request was not started because its channel had closed (the broker gives
        it to another agent, or to this one again). Its stale deliveries end unacked; a redelivery
        that joined it in the meantime, on the new channel, is handled afresh."""
        waiting = self._running.pop(running_key)
        for delivery in waiting:
            if delivery.stale:
                self._consumer.reply_and_ack(delivery, NOT_RUN, False)
        for delivery in waiting:
            if not delivery.stale:
                self.handle(delivery)

    def _done(self, running_key: Hashable, key: Optional[Hashable], summary: Summary, answer: Answer) -> None:
        """I/O thread: remember the answer and give it to every delivery of the request."""
        waiting = self._running.pop(running_key)
        if key is not None:
            self._cache.put(key, (summary, answer))
        for position, delivery in enumerate(waiting):
            delivery.summary = summary
            self._consumer.reply_and_ack(delivery, answer, position > 0)
