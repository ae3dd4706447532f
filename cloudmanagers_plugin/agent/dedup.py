"""Remembers the last answers by request, so a redelivered request is answered, not re-run.

RabbitMQ redelivers every unacked request after a connection loss, including requests whose
reply was already published (the ack was lost with the connection). Re-running a ``create``
would make a second VM; oslo.messaging keeps a similar (16-entry) message-id cache.
"""

import hashlib
from collections import OrderedDict
from typing import Hashable, Optional, Tuple

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
    """A bounded least-recently-used map from request key to answer (I/O thread only)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: "OrderedDict[Hashable, object]" = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> object:
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: Hashable, answer: object) -> None:
        self._entries[key] = answer
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
