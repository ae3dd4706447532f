"""From a delivery to its answer: dedup, gate, then the controller on a worker thread.

Everything here except ``_execute`` runs on pika's I/O thread, so the answer cache and the
table of running requests need no lock. A duplicate of a request that is still running joins
it and receives the same answer when it ends, so nothing runs twice.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from pika import BasicProperties

from ..protocol import make_response
from .dedup import AnswerCache, request_key
from .gate import Answer, Gate, Summary, answer_from
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


class Dispatcher:
    """Routes each delivery to an answer exactly once per distinct request."""

    def __init__(
        self,
        gate: Gate,
        controller: Any,
        pool: OrderedPool,
        cache: AnswerCache,
        call_in_loop: Callable[[Callable[[], None]], None],
    ) -> None:
        self._gate = gate
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
        decision = self._gate.admit(delivery.body, delivery.properties.user_id, delivery.properties.timestamp)
        delivery.summary = decision.summary
        if decision.request is None:
            self._remember(key, delivery.summary, decision.answer)
            finish(delivery, decision.answer, "")
            return
        running_key = key if key is not None else object()
        self._running[running_key] = [(delivery, finish)]
        request = decision.request
        order = (request.cm_id, request.vm_name) if request.vm_name else None
        self._pool.submit(order, lambda: self._execute(running_key, key, request))

    def _execute(self, running_key: Hashable, key: Optional[Hashable], request: Request) -> None:
        """Worker thread: run the controller, then hand the answer back to the I/O thread."""
        answer = self._process(request)
        self._call_in_loop(lambda: self._done(running_key, key, answer))

    def _process(self, request: Request) -> Answer:
        try:
            return answer_from(self._controller.process(request.message))
        except Exception:  # the contract says process() never raises; the agent must survive if it does
            LOG.exception("the %s controller raised", request.collection)
            reply = make_response(
                self._gate.agent_uuid, request.cm_id, request.collection,
                error="internal error in the agent; see its log",
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
