"""Where the controller is hosted: inside a legacy synapse agent, or standalone.

When the synapse agent's ``ResourcesController`` and ``register`` import, the controller
subclasses the agent's class and registers itself as the 2013 plugin did. Without the agent
(Python 3, the project's own runtime) a built-in base class with the same contract is used:
``__init__(module)`` and ``set_response(status, **extra)`` building the reply from ``res_id``.
"""

from typing import Any, Dict, Optional

from .protocol import make_response

try:
    from synapse.register_plugin import register  # type: ignore[import-not-found]
    from synapse.resources.resources import ResourcesController  # type: ignore[import-not-found]

    IN_SYNAPSE_AGENT = True
except ImportError:
    IN_SYNAPSE_AGENT = False
    register = None

    class ResourcesController:  # type: ignore[no-redef]
        """Stand-in for the synapse agent's base class, with the same plugin contract."""

        __resource__ = ""

        def __init__(self, module: Any = None):
            self.module = module
            self.res_id: Optional[str] = None
            self.agent_uuid = ""

        def set_response(self, resp: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
            """The reply envelope for ``self.res_id`` (the agent's ``OutgoingMessage`` as a dict)."""
            return make_response(self.agent_uuid, self.res_id, self.__resource__, resp, extra.get("error"))

        def close(self) -> None:
            """Nothing to release: sessions close with the process."""


__all__ = ["IN_SYNAPSE_AGENT", "ResourcesController", "register"]
