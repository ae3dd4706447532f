"""synapse-cloudmanagers-plugin: manage private OpenStack clouds through the synapse agent.

Imported by a legacy synapse agent (from its custom plugin folder), this package registers
the ``cloudmanagers`` resource controller exactly as the 2013 plugin did. Imported anywhere
else, it only exposes the controller, which the project's own agent hosts.
"""

from .controller import CloudmanagersController
from .host import IN_SYNAPSE_AGENT, register
from .version import __version__

# The synapse agent's OS-module mapping: this plugin needs no OS-specific module.
OS_MAPPING = "[default]\ndefault = None\n"

if IN_SYNAPSE_AGENT:
    register(OS_MAPPING, CloudmanagersController)

__all__ = ["CloudmanagersController", "__version__"]
