"""The synapse envelope of a request and of its reply, shared by the controller and the agent.

A request is an object with ``collection`` and ``action`` (non-empty strings), and optionally
``id`` (the cloud manager; absent, null or empty: none), ``attributes`` (an object), ``monitor``
(a JSON boolean) and ``timestamp`` (a string), as the legacy ``IncomingMessage`` required. The
agent checks it before anything runs and the controller again when it is hosted by a legacy
agent; one parser serves both, so one bad field gets one message wherever it is found.

A synapse reply always carries ``uuid``, ``resource_id``, ``collection``, ``status``,
``msg_type`` and ``version``; a failed request keeps ``status: {}`` and adds ``error``
(synapse-client needs ``uuid`` in every reply, even an error). ``resource_id`` and
``collection`` echo the request: longer than any valid value, they come back as a marked prefix.
Unsolicited messages (change events) carry the same keys with their own ``msg_type``.
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional

from .errors import BadRequest
from .values import MAX_TEXT, checked_text, echo, json_type, text_value
from .version import __version__


def make_response(
    uuid: str,
    resource_id: Any,
    collection: Any,
    status: Optional[Dict[str, Any]] = None,
    error: Optional[str] = None,
) -> Dict[str, Any]:
    """Build one synapse response dict (JSON-serialisable)."""
    response = {
        "uuid": uuid,
        "resource_id": _echoed(resource_id),
        "collection": _echoed(collection),
        "status": {} if error is not None or status is None else status,
        "msg_type": "response",
        "version": __version__,
    }
    if error is not None:
        response["error"] = error
    return response


def make_unsolicited(uuid: str, resource_id: str, collection: str, msg_type: str, status: Dict[str, Any],
                     **extra: Any) -> Dict[str, Any]:
    """An unsolicited message (a change event, a compliance message), as the synapse agent
    publishes its own ``status`` and ``compliance_*`` messages: the reply's keys, no ``error``."""
    return {"uuid": uuid, "resource_id": resource_id, "collection": collection, "status": status,
            "msg_type": msg_type, "version": __version__, **extra}


def _echoed(value: Any) -> Any:
    return echo(value, MAX_TEXT) if isinstance(value, str) else value


@dataclass(frozen=True)
class Envelope:
    """A request whose envelope is well formed (the controller checks the attributes).

    ``message`` is the request with the legacy defaults merged in, as a plugin receives it.
    """

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
    def attributes(self) -> Dict[str, Any]:
        return self.message["attributes"]

    @property
    def monitor(self) -> Optional[bool]:
        """``monitor`` as sent: true, false, or None when the request leaves it out."""
        return self.message.get("monitor")

    @property
    def vm_name(self) -> str:
        """The VM name as the controller reads it (normalised by ``parse_envelope``)."""
        return text_value(self.attributes.get("name")) or ""


def as_object(message: Any) -> Dict[str, Any]:
    """``message`` itself, if it is a JSON object."""
    if not isinstance(message, dict):
        raise BadRequest(f"a request must be a JSON object, got {json_type(message)}")
    return message


def parse_envelope(message: Any, serves: str, collection_optional: bool = False) -> Envelope:
    """Check the envelope of a request for the collection ``serves``; BadRequest says what is wrong.

    ``collection_optional``: the controller, which a legacy agent reached by routing on the
    collection, takes a request without one as its own. The VM name is normalised here, once,
    as the controller reads it (stripped; a number as text), so the agent's per-VM ordering key
    and the controller always mean the same VM.
    """
    # the legacy defaults, but for ``monitor``: absent (leave monitoring as it is) is not false (stop it)
    merged = {"id": "", "attributes": {}, **as_object(message)}
    if collection_optional:
        merged.setdefault("collection", serves)
    _require_text(merged, "collection")
    _require_text(merged, "action", ": the request has no 'action' to run (read, create, update, delete or ping)")
    if merged["collection"] != serves:
        shown = echo(merged["collection"])
        raise BadRequest(f"The resource [{shown}] does not exist: this agent serves '{serves}', not '{shown}'")
    cm_id = merged["id"] or ""
    if not isinstance(cm_id, str):
        raise BadRequest(f"'id' must be a string (a cloud manager id), got {json_type(cm_id)}")
    checked_text("'id'", cm_id)
    _require_type(merged, "attributes", dict, "an object")
    if "monitor" in merged:
        _require_type(merged, "monitor", bool, "true or false")
    if "timestamp" in merged:
        _require_type(merged, "timestamp", str, "a string")
    name = text_value(merged["attributes"].get("name"))
    if name is not None:
        merged["attributes"] = {**merged["attributes"], "name": name}
    return Envelope(merged)


def _require_text(message: Dict[str, Any], key: str, hint: str = "") -> None:
    value = message.get(key)
    if not isinstance(value, str):
        got = f", got {json_type(value)}" if key in message else ""
        raise BadRequest(f"'{key}' is missing or is not a string{got}{hint}")
    if not value:
        raise BadRequest(f"'{key}' is empty{hint}")


def _require_type(message: Dict[str, Any], key: str, kind: type, what: str) -> None:
    if not isinstance(message[key], kind):
        raise BadRequest(f"'{key}' must be {what}, got {json_type(message[key])}")
