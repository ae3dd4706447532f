"""A monitored VM's desired state (synapse ``monitor``), as the controller hands it on.

A ``create`` or ``update`` sent with ``monitor: true`` asks the agent to keep the VM where the
request put it; ``monitor: false`` stops that. The controller works out the desired state from
the request and the transition table (``desired_after``) and gives it to a recorder at the end
of the request, and tells the recorder which VMs a request is changing meanwhile (``changing``):
until then the VM goes where the request sends it while the recorded state is the old one. The
standalone agent's recorder is a persistent store that its compliance monitor reads. Inside a
legacy synapse agent there is no recorder and ``monitor`` changes nothing.
"""

from dataclasses import asdict, dataclass
from typing import Any, ContextManager, Dict, Optional, Protocol

from . import states


@dataclass(frozen=True)
class DesiredState:
    """Where a monitored VM should be: its Nova status and, when known, its flavor id."""

    status: str
    flavor: Optional[str] = None
    vm_name: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DesiredState":
        return cls(str(data["status"]), data.get("flavor"), str(data.get("vm_name", "")))


class DesiredStateRecorder(Protocol):
    """What the controller tells about monitored VMs (thread-safe in any implementation)."""

    def record(self, section: str, vm_id: str, desired: DesiredState) -> None:
        """Monitor the VM (``monitor: true``): from now on it should be ``desired``."""

    def follow(self, section: str, vm_id: str, desired: DesiredState) -> None:
        """A change the controller made: a monitored VM's desired state follows it; others are left alone."""

    def forget(self, section: str, vm_id: str) -> None:
        """Stop monitoring the VM (``monitor: false``, or deleted through the controller)."""

    def knows(self, section: str, vm_id: str) -> bool:
        """Whether the VM is monitored."""

    def changing(self, section: str, vm_id: str) -> ContextManager[None]:
        """A request is changing the VM: until the context ends, what the VM looks like says nothing
        about its desired state, which the request hands over (``record``, ``follow``, ``forget``)
        before the context ends, or leaves as it was when it fails. Contexts count: with two
        requests on one VM at once, it is under change until both ended. Never persisted."""


def desired_after(requested: Optional[str], current_status: str, flavor: Optional[str]) -> DesiredState:
    """The state an update leaves a VM in: the requested target's settled status (a reboot settles
    ACTIVE), else, for a resize alone, the status it had; ``flavor`` the one it will have."""
    if requested:
        row = states.normalise(requested)
        if not row.by_resize:
            return DesiredState(row.final_status, flavor)
    return DesiredState(current_status, flavor)
