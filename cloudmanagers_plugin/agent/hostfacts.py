"""What this host is called and which addresses it has, for the request ``filters``.

Read from the standard library, ``/proc`` and ``/sys`` (no ``ifconfig``, no subprocess), and
cached briefly because a broadcast storm would otherwise re-read them for every message.
"""

import os
import platform
import socket
import threading
import time
from typing import Callable, FrozenSet, Optional

_FIB_TRIE = "/proc/net/fib_trie"
_IF_INET6 = "/proc/net/if_inet6"
_SYS_NET = "/sys/class/net"


def hostnames() -> FrozenSet[str]:
    """The short host name and the fully qualified one (lower case)."""
    return frozenset(name.lower() for name in (socket.gethostname(), socket.getfqdn()) if name)


def ipv4_addresses() -> FrozenSet[str]:
    """Local IPv4 addresses: the ``/32 host LOCAL`` leaves of the kernel's routing trie."""
    found = set()
    previous = ""
    try:
        with open(_FIB_TRIE, encoding="ascii") as trie:
            for line in trie:
                text = line.strip()
                if text.startswith("/32 host LOCAL") and previous:
                    found.add(previous)
                previous = text[4:] if text.startswith("|-- ") else ""
    except OSError:
        return frozenset()
    return frozenset(found)


def ip_addresses() -> FrozenSet[str]:
    """Every local IPv4 and IPv6 address."""
    return ipv4_addresses() | ipv6_addresses()


def ipv6_addresses() -> FrozenSet[str]:
    """Local IPv6 addresses from ``/proc/net/if_inet6`` (32 hex digits per line)."""
    try:
        with open(_IF_INET6, encoding="ascii") as table:
            raw = [line.split()[0] for line in table if line.strip()]
    except OSError:
        return frozenset()
    return frozenset(
        socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexa)) for hexa in raw if len(hexa) == 32
    )


def mac_addresses() -> FrozenSet[str]:
    """Hardware addresses of the network interfaces, lower case, without the all-zero loopback."""
    found = set()
    try:
        interfaces = os.listdir(_SYS_NET)
    except OSError:
        return frozenset()
    for interface in interfaces:
        try:
            with open(os.path.join(_SYS_NET, interface, "address"), encoding="ascii") as handle:
                mac = handle.read().strip().lower()
        except OSError:
            continue
        if mac and mac.strip("0:"):
            found.add(mac)
    return frozenset(found)


def platform_name() -> FrozenSet[str]:
    """``platform.system()`` (e.g. ``Linux``), lower case."""
    return frozenset({platform.system().lower()})


class CachedFact:
    """One fact, recomputed at most every ``ttl`` seconds (thread-safe)."""

    def __init__(self, read: Callable[[], FrozenSet[str]], ttl: float = 30.0) -> None:
        self._read = read
        self._ttl = ttl
        self._value: Optional[FrozenSet[str]] = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> FrozenSet[str]:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now >= self._expires:
                self._value = self._read()
                self._expires = now + self._ttl
            return self._value
