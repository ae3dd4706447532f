"""A bounded map whose entries expire: the driver's console URLs and image ids.

One driver serves every worker thread, so the map takes a lock around each use: a thread
changing a plain dict while another iterates it fails ("dictionary changed size during
iteration"). An entry expires ``ttl`` seconds after it is put; a full map drops its oldest
entries first, which with a single ``ttl`` are also the first to expire.
"""

import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Optional, Tuple, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """At most ``size`` entries, each kept ``ttl`` seconds. Thread-safe."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: "OrderedDict[K, Tuple[float, V]]" = OrderedDict()

    def get(self, key: K) -> Optional[V]:
        """The value put under ``key``; None when there is none or it has expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                del self._entries[key]
                return None
            return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds, dropping the oldest entries if full."""
        with self._lock:
            self._entries.pop(key, None)
            while len(self._entries) >= self._size:
                self._entries.popitem(last=False)
            self._entries[key] = (self._clock() + self._ttl, value)

    def discard(self, key: K) -> None:
        """Forget ``key`` (no error if it is not there)."""
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
