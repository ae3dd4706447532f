"""When was a request sent? Only what carries its time zone can say, so only that is aged.

synapse-client stamps the body ``timestamp`` with its host's local time and no zone
(``%d/%m/%y %H:%M:%S``): from Brussels, New York or Tokyo the same instant reads differently,
so such a stamp proves no age and is not checked, unless the operator names the zone its
clients run in (``[agent] legacy_timestamp_zone``). What does say an instant is aged against
``max_request_age``: the AMQP ``timestamp`` property (seconds since the epoch, what
``cloudmanagers call`` sends), else a body ``timestamp`` in ISO 8601 with a zone
(``2026-11-25T21:30:00+00:00``). The AMQP ``expiration`` property, which ``call`` sends too,
is enforced by the broker itself: an expired request never reaches the agent.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Optional

LEGACY_FORMAT = "%d/%m/%y %H:%M:%S"


class BadTimestamp(ValueError):
    """The body's ``timestamp`` is in no format this agent reads; the text says which it reads."""


@dataclass(frozen=True)
class SentAt:
    """An instant (seconds since the epoch) and where it was read, for the refusal message."""

    epoch: float
    source: str


def legacy_zone(name: str) -> Optional[tzinfo]:
    """The zone that ``legacy_timestamp_zone`` names (an IANA name such as Europe/Brussels, or UTC);
    None for an empty setting. ValueError for a name this host does not know."""
    name = name.strip()
    if not name:
        return None
    if name.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # Python 3.9+
    except ImportError:
        raise ValueError(f"'{name}' needs Python 3.9 or later (zoneinfo); only UTC works here") from None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{name}' is not a time zone this host knows (e.g. Europe/Brussels, UTC)") from None


def sent_at(body_timestamp: Optional[str], amqp_timestamp: Optional[int], zone: Optional[tzinfo]) -> Optional[SentAt]:
    """When the request was sent, from the first source that can say it; None when none can.

    A body ``timestamp`` is always parsed, so a garbled one is refused even when the AMQP
    property is there.
    """
    from_body = _parse_body(body_timestamp, zone) if body_timestamp is not None else None
    if amqp_timestamp is not None:
        return SentAt(float(amqp_timestamp), "AMQP timestamp property")
    return from_body


def _parse_body(text: str, zone: Optional[tzinfo]) -> Optional[SentAt]:
    try:
        stamped = datetime.strptime(text, LEGACY_FORMAT)
    except ValueError:
        return SentAt(_iso_with_zone(text).timestamp(), "timestamp")
    if zone is None:
        return None
    zone_name = getattr(zone, "key", None) or "UTC"
    return SentAt(stamped.replace(tzinfo=zone).timestamp(), f"timestamp, read in {zone_name} (legacy_timestamp_zone)")


def _iso_with_zone(text: str) -> datetime:
    try:
        stamped = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        stamped = None
    if stamped is None or stamped.tzinfo is None:
        raise BadTimestamp(
            f"'timestamp' must be {LEGACY_FORMAT} (synapse-client) or ISO 8601 with a zone "
            "(e.g. 2026-11-25T21:30:00+00:00)"
        )
    return stamped


def iso_now(now: Optional[float] = None) -> str:
    """The current time as a zone-aware body ``timestamp`` (UTC, ISO 8601)."""
    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).isoformat(timespec="seconds")
