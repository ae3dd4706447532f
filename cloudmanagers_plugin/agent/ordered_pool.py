"""A bounded thread pool that keeps per-key order.

Requests about different VMs run in parallel, but two requests about the same VM (a ``create``
then a ``delete``) must run in the order they arrived, or the delete could look before the VM
exists. Each key has a queue; one thread at a time works through a key's queue.
"""

import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Deque, Dict, Hashable, Optional

LOG = logging.getLogger(__name__)

Job = Callable[[], None]


class OrderedPool:
    """Runs jobs on ``workers`` threads; jobs with the same non-None key run one after another."""

    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-worker")
        self._lock = threading.Lock()
        self._queues: Dict[Hashable, Deque[Job]] = {}

    def submit(self, key: Optional[Hashable], job: Job) -> None:
        """Queue ``job``; it starts after every earlier job with the same key has finished."""
        if key is None:
            self._executor.submit(self._run, job)
            return
        with self._lock:
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._queues[key] = deque()
        self._executor.submit(self._drain, key, job)

    def _drain(self, key: Hashable, job: Job) -> None:
        while True:
            self._run(job)
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    return
                job = queue.popleft()

    @staticmethod
    def _run(job: Job) -> None:
        try:
            job()
        except Exception:  # a job that raises must not wedge its key's queue
            LOG.exception("agent job failed")

    def shutdown(self) -> None:
        """Wait for every queued job, then release the threads."""
        self._executor.shutdown(wait=True)
