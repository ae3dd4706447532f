"""From a delivery to its answer: size, dedup, then the gate and the controller on worker threads.

Only bounded bookkeeping runs on pika's I/O thread (the size check, the digest of a body within
the size limit, the answer cache and the table of running requests, which therefore need no
lock): decoding and judging a body is work its sender controls, and it must never hold up
other requests or the heartbeats. Admissions run one at a time, in arrival order, so requests
about one VM still reach the per-VM queues in the order they arrived. A duplicate of a request
that is still being admitted or run joins it and receives the same answer, so nothing runs twice.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from pika import BasicProperties

from ..protocol import make_response
from ..request_context import running_request
from .dedup import AnswerCache, request_key
from .gate import Answer, Decision, Gate, Summary, answer_from
from .ordered_pool import OrderedPool
from .request import Request

LOG = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One request as it arrived on the consume channel."""

    channel: Any
    tag: int
    properties: BasicProperties
    body: bytes
    received: float = field(default_factory=time.monotonic)
    summary: Summary = field(default_factory=Summary)


# Called on the I/O thread with the delivery, its answer and a note ("" or "duplicate").
Finish = Callable[[Delivery, Answer, str], None]

ENTRY_OVERHEAD = 1024  # bytes counted per cached answer besides its body: key, summary, bookkeeping
ADMISSION = ("admission",)  # the ordered pool key every admission shares: one at a time, in order


def cached_weight(entry: object) -> int:
    """The bytes an answer cache entry ``(summary, answer)`` holds, roughly."""
    _summary, answer = entry  # type: ignore[misc]
    return len(answer.body or b"") + ENTRY_OVERHEAD


class Dispatcher:
    """Routes each delivery to an answer exactly once per distinct request."""

    def __init__(
        self,
        gate: Gate,
        controller: Any,
        pool: OrderedPool,
        cache: AnswerCache,
        call_in_loop: Callable[[Callable[[], None]], None],
        max_message_bytes: int,
    ) -> None:
        self._gate = gate
        self._max_bytes = max_message_bytes
        self._controller = controller
        self._pool = pool
        self._cache = cache
        self._call_in_loop = call_in_loop
        self._running: Dict[Hashable, List[Tuple[Delivery, Finish]]] = {}

    @property
    def busy(self) -> bool:
        """True while some admitted request has not come back from the controller."""
        return bool(self._running)

    def handle(self, delivery: Delivery, finish: Finish) -> None:
        """Answer ``delivery`` through ``finish``, now or when its request has run."""
        if len(delivery.body) > self._max_bytes:
            finish(delivery, self._gate.too_large(len(delivery.body), self._max_bytes), "")
            return
        key = request_key(delivery.properties, delivery.body)
        if key in self._running:
            delivery.summary = self._running[key][0][0].summary
            self._running[key].append((delivery, finish))
            return
        if key is not None and key in self._cache:
            summary, answer = self._cache.get(key)
            delivery.summary = summary
            finish(delivery, answer, "duplicate")
            return
        running_key = key if key is not None else object()
        self._running[running_key] = [(delivery, finish)]
        properties = delivery.properties
        self._pool.submit(ADMISSION, lambda: self._admit(running_key, key, delivery.body, properties))

    def _admit(self, running_key: Hashable, key: Optional[Hashable], body: bytes, properties: BasicProperties) -> None:
        """Worker thread: judge the body, then hand the decision back to the I/O thread."""
        try:
            decision = self._gate.admit(body, properties.user_id, properties.timestamp)
        except Exception:  # a bug in the checks must still give one answer, and keep the agent serving
            LOG.exception("judging a request failed")
            decision = Decision(Summary(), answer=self._internal_error("", ""))
        self._call_in_loop(lambda: self._admitted(running_key, key, decision, properties.correlation_id))

    def _admitted(self, running_key: Hashable, key: Optional[Hashable], decision: Decision,
                  correlation_id: Optional[str]) -> None:
        for delivery, _finish in self._running[running_key]:
            delivery.summary = decision.summary
        if decision.request is None:
            self._done(running_key, key, decision.answer)
            return
        request = decision.request
        order = (request.cm_id, request.vm_name) if request.vm_name else None
        self._pool.submit(order, lambda: self._execute(running_key, key, request, correlation_id))

    def _execute(self, running_key: Hashable, key: Optional[Hashable], request: Request,
                 correlation_id: Optional[str]) -> None:
        """Worker thread: run the controller, then hand the answer back to the I/O thread."""
        with running_request(correlation_id):
            answer = self._process(request)
        self._call_in_loop(lambda: self._done(running_key, key, answer))

    def _process(self, request: Request) -> Answer:
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

    def _done(self, running_key: Hashable, key: Optional[Hashable], answer: Answer) -> None:
        waiting = self._running.pop(running_key)
        self._remember(key, waiting[0][0].summary, answer)
        for position, (delivery, finish) in enumerate(waiting):
            finish(delivery, answer, "duplicate" if position else "")

    def _remember(self, key: Optional[Hashable], summary: Summary, answer: Answer) -> None:
        if key is not None:
            self._cache.put(key, (summary, answer))
