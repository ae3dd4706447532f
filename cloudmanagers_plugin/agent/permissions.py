"""Who may do what: the legacy ``permissions.conf``, enforced.

Format (one rule a line, whitespace separated): ``<user> <collection> <resource id> <perms>``,
where user and collection are a word or ``*``, the resource id may be double-quoted and may
contain ``*``, and perms are one to four of ``C R U D`` or ``-`` for nothing. The first rule
whose user, collection and resource id all match decides; no matching rule denies. ``R`` also
grants ``ping``. The user is the request's AMQP ``user_id``, which RabbitMQ checks against the
publisher's login, so rules are per broker account.

Three deliberate departures from the legacy matcher: patterns must match the whole value (the
legacy prefix match let a rule for ``ops`` grant ``ops2`` too), ``#`` starts a comment line,
and a request without ``user_id`` is anonymous: RabbitMQ only checks a ``user_id`` that is
present, so leaving it out must not pass for any user. Anonymous requests match only rules
whose user is ``(anonymous)``, and ``*`` does not match them; with no such rule they are denied.
"""

import re
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Pattern

from ..errors import ConfigError

ANONYMOUS = "(anonymous)"  # the user column of rules for requests that carry no user_id
_RULE = re.compile(r'^(\*|\w+|\(anonymous\))\s+(\*|\w+)\s+("[^"]*"|\S+)\s+([CRUD]{1,4}|-)$')

# The permission letter each action needs; actions not listed are never allowed by a rule.
ACTION_LETTER = {"create": "C", "read": "R", "ping": "R", "update": "U", "delete": "D"}


def _glob(text: str) -> Pattern[str]:
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
    user_pattern = None if user == ANONYMOUS else _glob(user)
    return Rule(user_pattern, _glob(collection), _glob(resource.strip('"')), frozenset(letters) - {"-"})


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
