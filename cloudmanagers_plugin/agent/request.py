"""Decoding and checking one request body, as the legacy ``IncomingMessage`` did.

The legacy agent dropped malformed requests silently; here each check raises ``InvalidRequest``
with a sentence for the requester, and the agent answers with it. The checks are split so that
the agent can read ``filters`` before judging the rest: a broadcast that does not target this
agent must not draw an error reply from it.
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from ..values import MAX_TEXT, text_value

MAX_FILTER_VALUES = 64  # values per filter; each at most MAX_TEXT characters (a host name is 253)

class InvalidRequest(Exception):
    """The request cannot be run; the text says why and goes into the error reply."""


def decode(body: bytes) -> Dict[str, Any]:
    """The body as a JSON object."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise InvalidRequest("the message body is not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidRequest("the message body must be a JSON object")
    return message


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
        raise InvalidRequest("'filters' must be an object whose values are lists of strings")
    bounded = all(
        len(values) <= MAX_FILTER_VALUES and all(len(value) <= MAX_TEXT for value in values)
        for values in filters.values()
    )
    if not bounded:
        raise InvalidRequest(
            f"'filters' may hold at most {MAX_FILTER_VALUES} values per filter, "
            f"each at most {MAX_TEXT} characters"
        )
    return filters


def _require_text(message: Dict[str, Any], key: str) -> None:
    value = message.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{key}' is missing or is not a string")
    if not value:
        raise InvalidRequest(f"'{key}' is empty")


def _require_type(message: Dict[str, Any], key: str, kinds: Tuple[type, ...], what: str) -> None:
    if not isinstance(message[key], kinds):
        raise InvalidRequest(f"'{key}' must be {what}")


@dataclass(frozen=True)
class Request:
    """A request that passed the envelope checks (the controller validates the attributes)."""

    message: Dict[str, Any]

    @property
    def action(self) -> str:
        return self.message["action"]

    @property
    def collection(self) -> str:
        return self.message["collection"]

    @property
    def cm_id(self) -> str:
        return self.message["id"] or ""

    @property
    def vm_name(self) -> str:
        """The VM name as the controller reads it (already normalised by ``validate``)."""
        return text_value(self.message["attributes"].get("name")) or ""


def validate(message: Dict[str, Any]) -> Request:
    """Check the envelope fields' presence and types; merge the legacy defaults.

    The VM name is normalised here, once, as the controller reads it (stripped; a number as
    text), so the per-VM ordering key and the controller always mean the same VM.
    """
    _require_text(message, "collection")
    _require_text(message, "action")
    merged = {"id": "", "attributes": {}, "monitor": False, **message}  # the legacy defaults
    _require_type(merged, "id", (str, type(None)), "a string")
    _require_type(merged, "attributes", (dict,), "an object")
    _require_type(merged, "monitor", (bool,), "true or false")
    if "timestamp" in merged:
        _require_type(merged, "timestamp", (str,), "a string")
    name = text_value(merged["attributes"].get("name"))
    if name is not None:
        merged["attributes"] = {**merged["attributes"], "name": name}
    return Request(merged)
