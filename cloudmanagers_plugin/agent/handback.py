"""Handing finished work back to the I/O thread, one wake-up for many results.

``add_callback_threadsafe`` writes to the IOLoop's wake-up pipe on every call; under load
several workers finish between two loop turns, so their results are queued here and the loop
is woken once to run them all.
"""

from collections import deque
from typing import Callable, Deque

Callback = Callable[[], None]


class Handback:
    """Thread-safe: ``post`` from any thread; the callbacks run on the loop's thread, in order."""

    def __init__(self, call_in_loop: Callable[[Callback], None]) -> None:
        self._call_in_loop = call_in_loop
        self._queue: Deque[Callback] = deque()
        self._scheduled = False

    def post(self, callback: Callback) -> None:
        self._queue.append(callback)
        if not self._scheduled:  # a race only schedules one drain too many, which finds nothing
            self._scheduled = True
            self._call_in_loop(self._drain)

    def _drain(self) -> None:
        self._scheduled = False  # before popping: a callback posted from now on schedules a drain
        while self._queue:
            self._queue.popleft()()
