"""Does a broadcast request target this agent? (the ``filters`` field, legacy semantics)

A broadcast reaches every agent bound to the fanout exchange; ``filters`` pick the targets, and
an agent that is not targeted stays silent. As in the legacy agent every known filter must
match, unknown filter names are skipped, and filters that name no known filter at all match
nothing (so a typo never turns a targeted request into a broadcast). Host names, addresses and
MACs accept ``*`` globs, case-insensitively; uuids and platforms must be equal.
"""

import fnmatch
import math
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Sequence

from .hostfacts import CachedFact, hostnames, ip_addresses, mac_addresses, platform_name

Fact = Callable[[], FrozenSet[str]]


def _glob(pattern: str, values: FrozenSet[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for value in values)


def _equal(wanted: str, values: FrozenSet[str]) -> bool:
    return wanted in values


def _lower(text: str) -> str:
    return text.lower()


def _mac(text: str) -> str:
    return text.lower().replace("-", ":")


# filter name -> (how a requested value is normalised, how it is compared with the facts)
_RULES = {
    "uuids": (_lower, _equal),
    "hostnames": (_lower, _glob),
    "ipaddresses": (_lower, _glob),
    "macaddresses": (_mac, _glob),
    "platforms": (_lower, _equal),
}


class HostFilter:
    """Evaluates ``filters`` against this host's facts (``facts`` replaces some, for tests)."""

    def __init__(self, agent_uuid: str, facts: Optional[Mapping[str, Fact]] = None) -> None:
        self._facts: Dict[str, Fact] = {
            "uuids": lambda: frozenset({agent_uuid.lower()}),
            "hostnames": CachedFact(hostnames),
            "ipaddresses": CachedFact(ip_addresses),
            "macaddresses": CachedFact(mac_addresses),
            "platforms": CachedFact(platform_name, ttl=math.inf),
            **(facts or {}),
        }

    def matches(self, filters: Mapping[str, Sequence[str]]) -> bool:
        """True when the request is for this agent (``{}`` means every agent)."""
        if not filters:
            return True
        known = [name for name in filters if name in _RULES]
        return bool(known) and all(self._one(name, filters[name]) for name in known)

    def _one(self, name: str, wanted: Sequence[str]) -> bool:
        normalise, match = _RULES[name]
        values = self._facts[name]()
        return any(match(normalise(item), values) for item in wanted)
