"""The synapse reply envelope, shared by the controller and the standalone agent.

A synapse reply always carries ``uuid``, ``resource_id``, ``collection``, ``status``,
``msg_type`` and ``version``; a failed request keeps ``status: {}`` and adds ``error``
(synapse-client needs ``uuid`` in every reply, even an error). ``resource_id`` and
``collection`` echo the request: longer than any valid value, they come back as a marked prefix.
"""

from typing import Any, Dict, Optional

from .values import MAX_TEXT, echo
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


def _echoed(value: Any) -> Any:
    return echo(value, MAX_TEXT) if isinstance(value, str) else value
