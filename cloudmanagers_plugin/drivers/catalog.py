"""A cached list of named cloud objects (networks, security groups, zones, server groups).

A create that names them must not cost a listing each time, and a name that does not exist
must be an error listing what does. So the list is kept for ``ttl`` seconds and listed again
at most once when a name is missing from it (the object may be new).
"""

import threading
import time
from typing import Callable, List, Optional, Tuple

from ..errors import Conflict, NotFound

Named = Tuple[str, str]  # (id, name)


class Catalog:
    """Objects of one ``kind`` found by id or by exact name. Thread-safe."""

    def __init__(self, kind: str, loader: Callable[[], List[Named]], ttl: float):
        self.kind = kind
        self._loader = loader
        self._ttl = ttl
        self._lock = threading.Lock()
        self._items: List[Named] = []
        self._loaded: Optional[float] = None

    def find(self, ref: str, where: str) -> str:
        """The id of the object whose id or name is ``ref``; NotFound listing the names otherwise."""
        items, fresh = self._current(refresh=False)
        found = _match(ref, items, self.kind, where)
        if found is None and not fresh:
            items, _ = self._current(refresh=True)
            found = _match(ref, items, self.kind, where)
        if found is None:
            names = ", ".join(sorted({name or object_id for object_id, name in items})) or "none"
            raise NotFound(f"{where}: no {self.kind} '{ref}' (available: {names})")
        return found

    def _current(self, refresh: bool) -> Tuple[List[Named], bool]:
        """The list and whether it was loaded by this call."""
        with self._lock:  # one listing at a time: concurrent creates share it
            expired = self._loaded is None or time.monotonic() - self._loaded > self._ttl
            if refresh or expired:
                self._items = self._loader()
                self._loaded = time.monotonic()
                return self._items, True
            return self._items, False


def _match(ref: str, items: List[Named], kind: str, where: str) -> Optional[str]:
    if any(object_id == ref for object_id, _ in items):
        return ref
    named = [object_id for object_id, name in items if name == ref]
    if len(named) > 1:
        raise Conflict(f"{where}: several {kind}s are named '{ref}' ({', '.join(named)}); use the id")
    return named[0] if named else None
