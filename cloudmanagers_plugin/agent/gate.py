"""The checks a request passes before any OpenStack work: target, shape, collection, age, rights.

They run on a worker thread, never on pika's I/O thread: the body's size is the sender's
choice (up to ``max_message_bytes``), and so is the work of decoding it. The order matters: ``filters`` come first so an agent a broadcast does not target stays silent
even when the request is malformed for it; then validation; the age check comes before the
permission check so a replayed old request is refused whoever sent it.
"""

import json
import logging
import time
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Dict, Optional

from ..protocol import make_response
from .filters import HostFilter
from .permissions import Permissions
from .request import InvalidRequest, Request, decode, read_filters, validate
from .timestamps import BadTimestamp, sent_at

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
    request: Optional[Request] = None
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
            request = validate(message)
            self._check(request, user, amqp_timestamp)
        except InvalidRequest as refused:
            reply = make_response(
                self.agent_uuid,
                _short(message.get("id")) if isinstance(message.get("id"), str) else "",
                message.get("collection") if isinstance(message.get("collection"), str) else "",
                error=str(refused),
            )
            return Decision(summary, answer=answer_from(reply))
        return Decision(summary, request=request)

    def _check(self, request: Request, user: Optional[str], amqp_timestamp: Optional[int]) -> None:
        if request.collection != self._collection:
            raise InvalidRequest(
                f"The resource [{_short(request.collection)}] does not exist "
                f"(this agent serves '{self._collection}')"
            )
        self._check_age(request.message.get("timestamp"), amqp_timestamp)
        who = f"user '{_short(user)}'" if user else "an anonymous request (no user_id)"
        if self._permissions and not self._permissions.allows(
            user, request.collection, request.cm_id, request.action
        ):
            raise InvalidRequest(
                f"permission denied: {who} may not {_short(request.action)} "
                f"{request.collection} '{_short(request.cm_id)}'"
            )

    def _check_age(self, body_timestamp: Optional[str], amqp_timestamp: Optional[int]) -> None:
        """Refuse a request older (or further in the future) than max_request_age, when its age is known."""
        try:
            sent = sent_at(body_timestamp, amqp_timestamp, self._legacy_zone)
        except BadTimestamp as bad:
            raise InvalidRequest(str(bad)) from None
        if not self._max_age or sent is None:
            return
        age = time.time() - sent.epoch
        if abs(age) > self._max_age:
            when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
            raise InvalidRequest(
                f"request not run: it is {when} by its {sent.source}, beyond max_request_age "
                f"{self._max_age:.0f} s (check the sender's clock)"
            )
