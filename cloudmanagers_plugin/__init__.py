"""synapse-cloudmanagers-plugin: manage private OpenStack clouds through the synapse agent.

Imported by a legacy synapse agent (from its custom plugin folder), this package registers
the ``cloudmanagers`` resource controller exactly as the 2013 plugin did. Imported anywhere
else, it only exposes the controller, which the project's own agent hosts; the controller is
imported on first use, so ``cloudmanagers call`` and ``--version`` start without loading it.
"""

from typing import Any

from .host import IN_SYNAPSE_AGENT, register
from .version import __version__

# The synapse agent's OS-module mapping: this plugin needs no OS-specific module.
OS_MAPPING = "[default]\ndefault = None\n"


def __getattr__(name: str) -> Any:
    """``CloudmanagersController``, imported when first asked for (PEP 562)."""
    if name == "CloudmanagersController":
        from .controller import CloudmanagersController

        return CloudmanagersController
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if IN_SYNAPSE_AGENT:
    from .controller import CloudmanagersController

    register(OS_MAPPING, CloudmanagersController)

__all__ = ["CloudmanagersController", "__version__"]
