"""The driver interface: plain verbs the controller calls, nothing provider-specific.

A driver owns one cloud manager section for the life of the process (its session, its
token, its caches). The controller never sees HTTP: drivers raise only the project's
errors (``cloudmanagers_plugin.errors``). Protocols made of several calls and waits (the
two-step resize, waiting for a status or an image) are written once here, on top of the
single calls each driver implements, so the controller asks for an outcome, not a sequence.
"""

import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Tuple, TypeVar

from ..config import CloudManagerConfig
from ..errors import BackendError, Conflict, NotFound, ServerFault, WaitTimeout
from ..states import RESIZABLE, RESIZING, VERIFY_RESIZE, ServerAction

DELETED = "DELETED"
RESIZE_MARK = "cloudmanagers_resize_request"  # server metadata: the request that started the VM's last resize
CONFIRM_WAIT = 600.0  # how long ``confirm`` waits for VERIFY_RESIZE when no ``wait`` is given
T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    """What the controller needs to know about one VM."""

    id: str
    name: str
    status: str
    task_state: Optional[str] = None
    flavor_name: Optional[str] = None
    vcpus: Optional[int] = None
    fault: Optional[str] = None
    addresses: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    image_id: Optional[str] = None
    key_name: Optional[str] = None
    availability_zone: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    tags: List[str] = field(default_factory=list)
    created: Optional[str] = None
    updated: Optional[str] = None


@dataclass(frozen=True)
class Image:
    """An image as a snapshot's look-up finds it: enough to order racing snapshots and answer one.

    ``created`` is Glance's ``created_at`` (whole seconds): with ``id`` it orders images the same
    way in every process, as ``Server.created`` does VMs.
    """

    id: str
    status: Optional[str] = None  # None: not read
    created: Optional[str] = None


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram: int
    disk: int


@dataclass(frozen=True)
class CreateOptions:
    """What a create may ask besides name, flavor, image, key and user data (all validated types).

    ``networks`` None means the section's ``networks``; ``("auto",)`` / ``("none",)`` as Nova
    means them; otherwise names or ids. Security groups and the server group are names or ids.
    """

    networks: Optional[Tuple[str, ...]] = None
    security_groups: Tuple[str, ...] = ()
    availability_zone: Optional[str] = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: Tuple[str, ...] = ()
    config_drive: bool = False
    description: Optional[str] = None
    server_group: Optional[str] = None


@dataclass(frozen=True)
class Console:
    """A remote console; ``url`` is None and ``reason`` says why when there is none
    (a sentence such as "the VM is SHUTOFF")."""

    url: Optional[str] = None
    port: Optional[int] = None
    reason: str = ""


def is_uuid(value: str) -> bool:
    """True when ``value`` is spelled like an OpenStack id."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class DriverEvents:
    """What a driver reports as it works; this one reports nowhere.

    The controller also runs inside the legacy synapse agent, which has no metrics; the
    standalone agent passes its own (``agent/metrics.py``). Called from worker threads.
    """

    def cloud_request(self, cloud_manager: str, method: str, status: int) -> None:
        """The cloud answered one HTTP request with ``status``."""

    def token_request(self, cloud_manager: str) -> None:
        """A token was requested from the identity service (the first one, or a refresh)."""


NO_EVENTS = DriverEvents()


class CloudDriver(ABC):
    """One cloud manager. Implementations must be safe to call from several threads."""

    #: seconds between two status polls while waiting (grows up to ``max_poll``)
    first_poll = 0.3
    max_poll = 3.0

    def __init__(self, config: CloudManagerConfig, events: DriverEvents = NO_EVENTS):
        self.config = config
        self.events = events

    @abstractmethod
    def authenticate(self) -> None:
        """Get (or reuse) a token; raise AuthError/BackendError with what to fix."""

    def project_id(self) -> Optional[str]:
        """The id of the project whose VMs this section sees, None when the driver cannot say (a
        cloud's notification bus carries every project's VMs: the others are skipped)."""
        return None

    @abstractmethod
    def list_server_names(self) -> List[str]:
        """Names of every VM of the project, all pages."""

    @abstractmethod
    def list_servers(self, changes_since: Optional[str] = None) -> List[Server]:
        """Every VM of the project with all its details, all pages (one request per page).

        ``changes_since`` (ISO 8601): only the VMs changed since then, deleted ones included
        (status ``DELETED``), so a controller resyncs after an outage with one read.
        """

    @abstractmethod
    def compute_max_version(self) -> str:
        """The highest API (micro)version the compute service offers: check-config's live check."""

    @abstractmethod
    def servers_named(self, name: str) -> List[Server]:
        """Every VM whose name is exactly ``name`` (Nova names are not unique)."""

    @abstractmethod
    def get_server(self, server_id: str) -> Server:
        """The VM with this id; NotFound when it is gone."""

    @abstractmethod
    def find_flavor(self, name_or_id: str) -> Flavor:
        """A flavor by id or by name."""

    @abstractmethod
    def flavor_id(self, flavor_name: Optional[str]) -> Optional[str]:
        """The id of a flavor known by name (as Nova embeds it in servers), None if unknown."""

    @abstractmethod
    def find_image(self, name_or_id: str) -> str:
        """An image id from an image id or an exact image name."""

    @abstractmethod
    def list_images(self) -> List[Dict]:
        """Every image visible to the project: ``{id, name, links}`` dicts."""

    @abstractmethod
    def list_flavors(self) -> List[Dict]:
        """Every flavor the project may use: ``{id, name, vcpus, ram, disk, public}``, all pages."""

    @abstractmethod
    def list_keys(self) -> List[Dict]:
        """The user's key pairs: ``{name, type, fingerprint}``, all pages."""

    @abstractmethod
    def list_networks(self) -> List[Dict]:
        """Networks visible to the project: ``{id, name, subnets [{id, name, cidr, ip_version}], shared, external}``."""

    @abstractmethod
    def list_security_groups(self) -> List[Dict]:
        """Security groups visible to the project: ``{id, name, description}``."""

    @abstractmethod
    def list_zones(self) -> List[str]:
        """Names of the available availability zones."""

    @abstractmethod
    def limits(self) -> Dict[str, Dict[str, Optional[int]]]:
        """Instances, cores and RAM of the project: ``{used, max}`` each (-1: unlimited)."""

    @abstractmethod
    def create_server(
        self, name: str, flavor: Flavor, image_id: str, key_name: Optional[str], user_data: Optional[bytes],
        options: CreateOptions = CreateOptions(),
    ) -> Server:
        """Ask for a new VM; returns at once with the VM in BUILD.

        Every name in ``options`` is resolved before anything is sent, so an unknown one creates nothing.
        """

    @abstractmethod
    def set_state(self, server_id: str, action: ServerAction) -> None:
        """Ask for one state action (pause, start, confirm_resize...); returns once the cloud accepted it."""

    @abstractmethod
    def resize(self, server_id: str, flavor: Flavor) -> None:
        """Start a resize; the VM goes to VERIFY_RESIZE (or straight to ACTIVE on auto-confirm clouds).

        One call: ``advance_resize`` runs the protocol around it.
        """

    @abstractmethod
    def delete(self, server_id: str) -> None:
        """Ask for the VM's deletion."""

    @abstractmethod
    def console(self, server: Server) -> Console:
        """The VM's remote console, or a Console whose ``reason`` says why there is none."""

    @abstractmethod
    def known_console(self, server: Server) -> Console:
        """The console already known for the VM, with no request: inventory reads list every VM
        with one request per page, so a console not yet read is a reason, not a call."""

    @abstractmethod
    def set_metadata(self, server_id: str, metadata: Mapping[str, str]) -> None:
        """Set (add or overwrite) these metadata keys of the VM."""

    @abstractmethod
    def delete_metadata(self, server_id: str, keys: List[str]) -> None:
        """Remove these metadata keys of the VM."""

    @abstractmethod
    def set_tags(self, server_id: str, tags: List[str]) -> None:
        """Replace the VM's tags."""

    @abstractmethod
    def rename(self, server_id: str, name: str) -> None:
        """Give the VM a new name."""

    @abstractmethod
    def snapshot(self, server_id: str, image_name: str, properties: Optional[Mapping[str, str]] = None) -> str:
        """Start an image of the VM, with these image ``properties``; returns the new image's id.

        Never sent twice by the driver: a second request would make a second image.
        """

    @abstractmethod
    def images_with(self, key: str, value: str) -> List[Image]:
        """The project's own images whose property ``key`` is ``value``, as the image service
        filters them (one request): how a snapshot finds the images its request made."""

    @abstractmethod
    def delete_image(self, image_id: str) -> None:
        """Delete the image (gone already counts as done)."""

    @abstractmethod
    def image_status(self, image_id: str) -> str:
        """The image's status (queued, saving, active, killed...; ``deleted`` once gone)."""

    @abstractmethod
    def console_log(self, server_id: str, lines: int) -> str:
        """The last ``lines`` lines of the VM's console output."""

    def advance_resize(
        self, server: Server, flavor: Optional[Flavor], *, confirm: bool = False, revert: bool = False,
        wait: Optional[float] = None, stop_at_verify: bool = False, request_id: Optional[str] = None,
    ) -> Tuple[Server, List[str]]:
        """Take the VM one step along the two-step resize; returns it and the actions run.

        The seed API resizes in two messages that both name the new flavor: the first starts the
        resize (the VM goes to VERIFY_RESIZE), the second confirms it. ``confirm`` does both in
        one message, waiting for VERIFY_RESIZE; ``revert`` undoes a resize awaiting confirmation
        (``flavor`` may then be None). A VM already on the flavor needs nothing, which is also how
        a cloud that confirms resizes by itself shows a finished one. ``stop_at_verify`` (a
        requested status VERIFY_RESIZE) makes only the first step and leaves a VM already
        awaiting the confirmation of this flavor as it is. ``wait`` waits for the final status.

        ``request_id`` (the request's correlation id) is written in the VM's metadata
        (``RESIZE_MARK``) before the resize starts: the first message and its redelivery look
        alike, so a redelivery of the message that started a resize, to this agent or another,
        must find its own id there and not take it for the confirming message (``_resume``).
        Nova takes metadata only from a VM with no task under way, as it does resizes, so the
        record cannot be made later. A kill between the record and the resize leaves the VM on
        its flavor: the redelivery then says so instead of resizing (at most once).
        """
        if request_id and flavor and not revert and server.metadata.get(RESIZE_MARK) == request_id:
            return self._resume(server, flavor, confirm, wait)
        if revert or server.status == VERIFY_RESIZE:
            if server.status != VERIFY_RESIZE:
                raise Conflict(f"cannot revert a resize: VM '{server.name}' is {server.status}, not {VERIFY_RESIZE}")
            if not revert and flavor and server.flavor_name != flavor.name:
                raise Conflict(
                    f"VM '{server.name}' awaits confirmation of a resize to {server.flavor_name}, not {flavor.name}: "
                    "send that flavor to confirm it, or revert: true"
                )
            if stop_at_verify:
                return server, []
            action = ServerAction.REVERT_RESIZE if revert else ServerAction.CONFIRM_RESIZE
            self.set_state(server.id, action)
            return self._settled(server, wait), [action.value]
        if flavor is None:
            raise ValueError("advance_resize needs a flavor unless it reverts")
        if server.status in RESIZABLE and server.flavor_name == flavor.name:
            return server, []  # already there, including clouds that auto-confirm resizes
        if server.status not in RESIZABLE:
            raise Conflict(
                f"cannot resize VM '{server.name}' while it is {server.status} (needs {' or '.join(RESIZABLE)})"
            )
        if request_id:
            self.set_metadata(server.id, {RESIZE_MARK: request_id})
        self.resize(server.id, flavor)
        return self._after_resize(server, flavor, confirm, wait)

    def _after_resize(self, server: Server, flavor: Flavor, confirm: bool,
                      wait: Optional[float]) -> Tuple[Server, List[str]]:
        """Once the resize started: wait for VERIFY_RESIZE when asked, and confirm when asked."""
        if not (confirm or wait):
            return server, ["resize"]
        server = self.wait_for_status(
            server.id, {VERIFY_RESIZE}, wait or CONFIRM_WAIT,
            done=lambda s: s.status in RESIZABLE and s.flavor_name == flavor.name and not s.task_state,
        )
        if confirm and server.status == VERIFY_RESIZE:
            self.set_state(server.id, ServerAction.CONFIRM_RESIZE)
            return self._settled(server, wait), ["resize", ServerAction.CONFIRM_RESIZE.value]
        return server, ["resize"]

    def _resume(self, server: Server, flavor: Flavor, confirm: bool,
                wait: Optional[float]) -> Tuple[Server, List[str]]:
        """A redelivery of the request that started the VM's resize: answer as its first run did.

        It confirms only when the request itself asked to (``confirm``); a resize still under
        way or awaiting confirmation is left as it is, and one already finished (confirmed by
        another message, or by the cloud) needs nothing.
        """
        awaiting = server.status == RESIZING or (server.status == VERIFY_RESIZE and server.flavor_name == flavor.name)
        finished = server.status in RESIZABLE and server.flavor_name == flavor.name
        if not (awaiting or finished):
            raise Conflict(
                f"VM '{server.name}': this request's resize to {flavor.name} was recorded, but the VM is "
                f"{server.status} on {server.flavor_name}: the resize did not run, failed or was reverted; "
                "send a new request to resize it"
            )
        return self._after_resize(server, flavor, confirm, wait)

    def _settled(self, server: Server, wait: Optional[float]) -> Server:
        return self.wait_for_status(server.id, RESIZABLE, wait) if wait else server

    def wait_for_image(self, image_id: str, timeout: float) -> str:
        """Poll until the image is active; BackendError if it fails, WaitTimeout if it takes longer."""
        last = {"status": ""}

        def active() -> Optional[str]:
            last["status"] = self.image_status(image_id)
            if last["status"] in ("killed", "deleted", "deactivated"):
                raise BackendError(f"the snapshot image {image_id} went to {last['status']}")
            return last["status"] if last["status"] == "active" else None

        return self._poll(active, timeout, lambda: WaitTimeout(
            f"the snapshot image {image_id} is still {last['status']} after {timeout:g} s; expected active"))

    def _poll(self, check: Callable[[], Optional[T]], timeout: float, timed_out: Callable[[], Exception]) -> T:
        """Call ``check`` until it returns something, sleeping ``first_poll`` doubling to ``max_poll``."""
        deadline = time.monotonic() + timeout
        interval = self.first_poll
        while True:
            found = check()
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timed_out()
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, self.max_poll)

    def find_server(self, name_or_id: str) -> Server:
        """The one VM with exactly this name, or this id; NotFound or Conflict otherwise."""
        if is_uuid(name_or_id):
            try:
                return self.get_server(name_or_id)
            except NotFound:
                pass  # a VM may be named like a UUID: look it up by name
        matches = self.servers_named(name_or_id)
        if not matches:
            raise NotFound(f"cloud manager '{self.config.name}': no VM named '{name_or_id}'")
        if len(matches) > 1:
            ids = ", ".join(server.id for server in matches)
            raise Conflict(
                f"cloud manager '{self.config.name}': {len(matches)} VMs are named '{name_or_id}' "
                f"(ids: {ids}); use the VM id instead of its name"
            )
        return matches[0]

    def wait_for_status(
        self,
        server_id: str,
        targets: Collection[str],
        timeout: float,
        failures: Collection[str] = ("ERROR",),
        done: Optional[Callable[[Server], bool]] = None,
    ) -> Server:
        """Poll until the VM's status is in ``targets`` (DELETED once it is gone).

        A status in ``failures`` with no task under way raises ServerFault with Nova's fault message
        (a VM leaving ERROR shows ERROR plus a task state until it has left); ``done`` may
        accept other states (e.g. auto-confirmed resizes). The poll interval grows from
        ``first_poll`` to ``max_poll`` so short transitions answer fast and long ones cost few calls.
        """
        last = [Server(id=server_id, name="", status="UNKNOWN")]

        def settled() -> Optional[Server]:
            try:
                server = self.get_server(server_id)
            except NotFound:
                server = Server(id=server_id, name="", status=DELETED)
            last[0] = server
            if (server.status in targets and not server.task_state) or (done and done(server)):
                return server
            if server.status in failures and not server.task_state:  # e.g. ERROR -> stop is under way
                raise ServerFault(
                    f"VM {server.name or server_id} went to {server.status}: {server.fault or 'Nova gave no fault message'}"
                )
            return None

        def timed_out() -> WaitTimeout:
            server = last[0]
            return WaitTimeout(
                f"VM {server.name or server_id} is still {server.status}"
                f"{' (' + server.task_state + ')' if server.task_state else ''} after {timeout:g} s; "
                f"expected {' or '.join(sorted(targets))}"
            )

        return self._poll(settled, timeout, timed_out)
