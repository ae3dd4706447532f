"""Remembers the last answers by request, so a redelivered request is answered, not re-run.

RabbitMQ redelivers every unacked request after a connection loss, including requests whose
reply was already published (the ack was lost with the connection). Re-running a ``create``
would make a second VM; oslo.messaging keeps a similar (16-entry) message-id cache.
"""

import hashlib
from collections import OrderedDict
from typing import Callable, Hashable, Optional, Tuple

from pika import BasicProperties


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
