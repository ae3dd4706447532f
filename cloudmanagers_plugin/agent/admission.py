"""Admission: may this request run here? Decoding, target, shape, age and rights, in that order.

The checks run on a worker thread, never on pika's I/O thread: the body's size is the sender's
choice (up to ``max_message_bytes``), and so is the work of decoding it. The order matters:
``filters`` come first, so an agent a broadcast does not target stays silent even when the
request is malformed for it; then the envelope (``protocol.parse_envelope``, the controller's
own parser); the age check comes before the permission check, so a replayed old request is
refused whoever sent it. The legacy agent dropped malformed requests silently; here each
refusal is an error reply with a sentence for the requester.

Filters (legacy semantics): a broadcast reaches every agent bound to the fanout exchange and
``filters`` pick the targets. Every known filter must match, unknown filter names are skipped,
and filters that name no known filter at all match nothing (so a typo never turns a targeted
request into a broadcast). Host names, addresses and MACs accept ``*`` globs,
case-insensitively; uuids and platforms must be equal.

Age: synapse-client stamps the body ``timestamp`` with its host's local time and no zone
(``%d/%m/%y %H:%M:%S``): from Brussels, New York or Tokyo the same instant reads differently,
so such a stamp proves no age and is not checked, unless the operator names the zone its
clients run in (``[agent] legacy_timestamp_zone``). What does say an instant is aged against
``max_request_age``: the AMQP ``timestamp`` property (seconds since the epoch, what
``cloudmanagers call`` sends), else a body ``timestamp`` in ISO 8601 with a zone
(``2026-11-25T21:30:00+00:00``). The AMQP ``expiration`` property, which ``call`` sends too,
is enforced by the broker itself: an expired request never reaches the agent.

Permissions: the legacy ``permissions.conf``, one rule a line (whitespace separated):
``<user> <collection> <resource id> <perms>``, where user and collection are a word or ``*``,
the resource id may be double-quoted and may contain ``*``, and perms are one to four of
``C R U D`` or ``-`` for nothing. The first rule whose user, collection and resource id all
match decides; no matching rule denies. ``R`` also grants ``ping``. The user is the request's
AMQP ``user_id``, which RabbitMQ checks against the publisher's login, so rules are per broker
account. Three deliberate departures from the legacy matcher: patterns must match the whole
value (the legacy prefix match let a rule for ``ops`` grant ``ops2`` too), ``#`` starts a
comment line, and a request without ``user_id`` is anonymous: RabbitMQ only checks a
``user_id`` that is present, so leaving it out must not pass for any user. Anonymous requests
match only rules whose user is ``(anonymous)``, and ``*`` does not match them; with no such
rule they are denied.
"""

import fnmatch
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Pattern, Sequence

from ..errors import BadRequest, ConfigError
from ..protocol import Envelope, as_object, make_response, parse_envelope
from ..values import MAX_TEXT
from .hostfacts import CachedFact, hostnames, ip_addresses, mac_addresses, platform_name

# -- the body ------------------------------------------------------------------------------------


MAX_FILTER_VALUES = 64  # values per filter; each at most MAX_TEXT characters (a host name is 253)


def decode(body: bytes) -> Dict[str, Any]:
    """The body as a JSON object."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest("the message body is not valid JSON") from None
    return as_object(message)


def read_filters(message: Dict[str, Any]) -> Dict[str, List[str]]:
    """``filters`` as ``{name: [values]}``; absent or ``null`` means no filter."""
    filters = message.get("filters")
    if filters is None:
        return {}
    well_formed = isinstance(filters, dict) and all(
        isinstance(values, list) and all(isinstance(value, str) for value in values)
        for values in filters.values()
    )
    if not well_formed:
        raise BadRequest("'filters' must be an object whose values are lists of strings")
    bounded = all(
        len(values) <= MAX_FILTER_VALUES and all(len(value) <= MAX_TEXT for value in values)
        for values in filters.values()
    )
    if not bounded:
        raise BadRequest(
            f"'filters' may hold at most {MAX_FILTER_VALUES} values per filter, "
            f"each at most {MAX_TEXT} characters"
        )
    return filters




# -- filters -------------------------------------------------------------------------------------


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


# -- age -----------------------------------------------------------------------------------------


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


# -- permissions ---------------------------------------------------------------------------------


ANONYMOUS = "(anonymous)"  # the user column of rules for requests that carry no user_id
_RULE = re.compile(r'^(\*|\w+|\(anonymous\))\s+(\*|\w+)\s+("[^"]*"|\S+)\s+([CRUD]{1,4}|-)$')

# The permission letter each action needs; actions not listed are never allowed by a rule.
ACTION_LETTER = {"create": "C", "read": "R", "ping": "R", "update": "U", "delete": "D"}


def _pattern(text: str) -> Pattern[str]:
    return re.compile(re.escape(text).replace(r"\*", ".*"))


@dataclass(frozen=True)
class Rule:
    """One parsed line of the file."""

    user: Optional[Pattern[str]]  # None: the rule is for anonymous requests
    collection: Pattern[str]
    resource: Pattern[str]
    letters: FrozenSet[str]

    def applies(self, user: Optional[str], collection: str, resource: str) -> bool:
        if not user:
            user_matches = self.user is None
        else:
            user_matches = self.user is not None and bool(self.user.fullmatch(user))
        return bool(
            user_matches
            and self.collection.fullmatch(collection)
            and self.resource.fullmatch(resource)
        )


def parse_rule(line: str) -> Rule:
    """Parse one rule line; raise ``ValueError`` when it is malformed."""
    match = _RULE.match(line.strip())
    if not match:
        raise ValueError("expected '<user> <collection> <resource id> <CRUD letters or ->'")
    user, collection, resource, letters = match.groups()
    user_pattern = None if user == ANONYMOUS else _pattern(user)
    return Rule(user_pattern, _pattern(collection), _pattern(resource.strip('"')), frozenset(letters) - {"-"})


class Permissions:
    """The rules of one permissions file, checked for each request."""

    def __init__(self, rules: List[Rule]) -> None:
        self._rules = rules

    @classmethod
    def load(cls, path: str) -> "Permissions":
        """Read ``path``; a missing, unreadable, empty or malformed file is a start-up error."""
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError as err:
            raise ConfigError(f"cannot read the permissions file {path}: {err.strerror}") from None
        rules = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                rules.append(parse_rule(line))
            except ValueError as err:
                raise ConfigError(f"{path} line {number}: {err}") from None
        if not rules:
            raise ConfigError(f"the permissions file {path} has no rules (use '* * * CRUD' to allow all)")
        return cls(rules)

    def allows(self, user: Optional[str], collection: str, resource: str, action: str) -> bool:
        """True when the first matching rule grants the letter ``action`` needs (no ``user``: anonymous)."""
        letter = ACTION_LETTER.get(action)
        for rule in self._rules:
            if rule.applies(user, collection, resource):
                return letter in rule.letters
        return False


# -- the gate ------------------------------------------------------------------------------------


_SHOWN = 80  # longest cloud manager id / VM name copied into a log line


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


@dataclass
class Summary:
    """What the per-message log line says about a request (never its attributes)."""

    action: str = "-"
    cm: str = "-"
    vm: str = "-"
    user: str = "-"

    @classmethod
    def of(cls, message: Dict[str, Any], user: Optional[str]) -> "Summary":
        attributes = message.get("attributes")
        name = attributes.get("name") if isinstance(attributes, dict) else None
        return cls(
            _short(message.get("action")) or "-",
            _short(message.get("id")) or "-",
            _short(name) or "-",
            _short(user) or "-",
        )


@dataclass
class Answer:
    """The outcome of one request: the reply body (None: stay silent), its log wording and level."""

    body: Optional[bytes]
    outcome: str
    level: int = logging.INFO


# A request not started because its channel closed while it waited for a worker: the broker
# gives it again (to this agent after a reconnect, or to another), so running it here as well
# would do its effect twice. Not acked, no reply.
NOT_RUN = Answer(None, "not run: its channel closed before it started, the broker redelivers it", logging.WARNING)


def answer_from(reply: Dict[str, Any]) -> Answer:
    """Encode a reply envelope; the outcome is ``ok`` or its whole error.

    A refused or failed request logs at WARNING; an internal error (a bug: the reply says
    "internal error ... see the agent's log") at ERROR, so ``journalctl -p`` finds both.
    """
    error = reply.get("error")
    if error is None:
        return Answer(json.dumps(reply).encode("utf-8"), "ok")
    level = logging.ERROR if str(error).startswith("internal error") else logging.WARNING
    return Answer(json.dumps(reply).encode("utf-8"), f"error: {error}", level)


@dataclass
class Decision:
    """Either a request to run, or the final answer the gate gave itself."""

    summary: Summary
    request: Optional[Envelope] = None
    answer: Optional[Answer] = None


SILENT = Answer(None, "not for this agent (filters)")


class Gate:
    """Admits a request body for one collection on one agent."""

    def __init__(
        self,
        agent_uuid: str,
        collection: str,
        host_filter: HostFilter,
        permissions: Optional[Permissions],
        max_request_age: float,
        legacy_zone: Optional[tzinfo] = None,
    ) -> None:
        self.agent_uuid = agent_uuid
        self._collection = collection
        self._filter = host_filter
        self._permissions = permissions
        self._max_age = max_request_age
        self._legacy_zone = legacy_zone

    def too_large(self, size: int, limit: int) -> Answer:
        """The error answer to a body over ``max_message_bytes``, which is not even decoded."""
        reply = make_response(
            self.agent_uuid, "", "",
            error=f"request refused: its body is {size} bytes, over this agent's limit of {limit} bytes "
                  "([agent] max_message_bytes)",
        )
        return answer_from(reply)

    def admit(self, body: bytes, user: Optional[str], amqp_timestamp: Optional[int] = None) -> Decision:
        """Decide what happens to one request body sent by ``user`` (with this AMQP timestamp property)."""
        message: Dict[str, Any] = {}
        summary = Summary(user=_short(user) or "-")
        try:
            message = decode(body)
            summary = Summary.of(message, user)
            if not self._filter.matches(read_filters(message)):
                return Decision(summary, answer=SILENT)
            request = parse_envelope(message, self._collection)
            self._check(request, user, amqp_timestamp)
        except BadRequest as refused:
            return Decision(summary, answer=self._error(message, str(refused)))
        return Decision(summary, request=request)

    def abandoned(self, body: bytes, user: Optional[str], deliveries: int) -> Decision:
        """The answer to a request the broker delivered ``deliveries`` times already: not run again.

        Each agent that took it stopped before answering (a request that kills its agent, or
        agents that keep losing their connection); running it once more could cost the group
        one more agent. Logged at ERROR: an operator must look at it.
        """
        try:
            message = decode(body)
        except BadRequest:
            message = {}
        answer = self._error(message, f"request abandoned after {deliveries} deliveries: every agent that took "
                                      "it stopped before answering, so it is not run again ([agent] delivery_limit)")
        answer.level = logging.ERROR
        return Decision(Summary.of(message, user), answer=answer)

    def _error(self, message: Dict[str, Any], error: str) -> Answer:
        """An error answer echoing the request's id and collection when they are text (cut if long)."""
        reply = make_response(
            self.agent_uuid,
            message.get("id") if isinstance(message.get("id"), str) else "",
            message.get("collection") if isinstance(message.get("collection"), str) else "",
            error=error,
        )
        return answer_from(reply)

    def _check(self, request: Envelope, user: Optional[str], amqp_timestamp: Optional[int]) -> None:
        self._check_age(request.message.get("timestamp"), amqp_timestamp)
        who = f"user '{_short(user)}'" if user else "an anonymous request (no user_id)"
        if self._permissions and not self._permissions.allows(
            user, request.collection, request.cm_id, request.action
        ):
            raise BadRequest(
                f"permission denied: {who} may not {_short(request.action)} "
                f"{request.collection} '{_short(request.cm_id)}'"
            )

    def _check_age(self, body_timestamp: Optional[str], amqp_timestamp: Optional[int]) -> None:
        """Refuse a request older (or further in the future) than max_request_age, when its age is known."""
        try:
            sent = sent_at(body_timestamp, amqp_timestamp, self._legacy_zone)
        except BadTimestamp as bad:
            raise BadRequest(str(bad)) from None
        if not self._max_age or sent is None:
            return
        age = time.time() - sent.epoch
        if abs(age) > self._max_age:
            when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
            raise BadRequest(
                f"request not run: it is {when} by its {sent.source}, beyond max_request_age "
                f"{self._max_age:.0f} s (check the sender's clock)"
            )
