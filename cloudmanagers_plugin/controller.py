"""The ``cloudmanagers`` resource controller: message -> action -> status dict.

It validates the request, picks the section's driver and calls the driver's plain verbs; it
knows nothing of HTTP, Nova or AMQP. Every failure becomes an ``error`` reply: nothing
escapes ``process``. It is thread-safe, so the agent may run several messages at once.
"""

import base64
import binascii
import contextvars
import logging
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from . import states
from .config import CloudManagerConfig, ConfigFile
from .desired import DesiredState, DesiredStateRecorder, desired_after
from .drivers import driver_class
from .drivers.base import (
    DELETED, NO_EVENTS, CloudDriver, Console, CreateOptions, DriverEvents, Image, Server, is_uuid,
)
from .errors import BackendError, BadRequest, CloudManagerError, Conflict, NotFound
from .host import ResourcesController
from .protocol import parse_envelope
from .request_context import correlation_id, redelivered
from .values import MAX_TEXT, checked_text, echo, json_type, parse_bool, printable, text_value

LOG = logging.getLogger(__name__)

MAX_WAIT = 3600.0
# Where a VM caught in a transition settles, for ``monitor: true`` sent alone.
SETTLES = {"BUILD": states.RUNNING, "REBOOT": states.RUNNING, "HARD_REBOOT": states.RUNNING}
MAX_CONSOLE_LINES = 10000
SETTLE_WAIT = 60.0  # how long a redelivered state change that met a 409 waits for the VM's task to end
MAX_USER_DATA = 65535  # Nova's limit for the base64 text
REBOOT_MARK = "cloudmanagers_reboot_request"  # server metadata: the request whose reboot ran last
CREATE_MARK = "cloudmanagers_create_request"  # server metadata: the request that created the VM
SNAPSHOT_MARK = "cloudmanagers_snapshot_request"  # image property: the request that took the snapshot
_REBOOTS = (states.ServerAction.REBOOT_SOFT, states.ServerAction.REBOOT_HARD)

Status = Dict[str, Any]
# The VMs the request being run on this thread is changing (``_changing``), released when it ends.
_CHANGING: contextvars.ContextVar[Optional[ExitStack]] = contextvars.ContextVar("changing", default=None)

# Discovery reads: request attribute -> (reply key, driver verb). Several may be asked at once.
DISCOVERY: Mapping[str, Tuple[str, str]] = {
    "listimages": ("images", "list_images"),
    "listflavors": ("flavors", "list_flavors"),
    "listkeys": ("keys", "list_keys"),
    "listnetworks": ("networks", "list_networks"),
    "listsecuritygroups": ("security_groups", "list_security_groups"),
    "listzones": ("zones", "list_zones"),
    "limits": ("limits", "limits"),
}


class CloudmanagersController(ResourcesController):
    """Synapse resource controller for the ``cloudmanagers`` collection."""

    __resource__ = "cloudmanagers"

    def __init__(self, module: Any = None, config_path: Optional[str] = None, agent_uuid: str = "",
                 desired_states: Optional[DesiredStateRecorder] = None, events: DriverEvents = NO_EVENTS):
        super().__init__(module)
        self.agent_uuid = agent_uuid
        # Where ``monitor`` leads: the standalone agent's store; none inside a legacy synapse agent.
        self.desired_states = desired_states
        self.events = events  # what the drivers report (the standalone agent's metrics)
        self.config = ConfigFile(config_path)
        self._drivers: Dict[str, CloudDriver] = {}
        self._drivers_lock = threading.Lock()
        self._reply_lock = threading.Lock()
        self._actions: Mapping[str, Callable[..., Status]] = {
            "read": self.read,
            "create": self.create,
            "update": self.update,
            "delete": self.delete,
            "ping": self.ping,
        }

    # -- the synapse entry point ------------------------------------------------------------

    def process(self, message: Any) -> Any:
        """Run one request and return the full synapse reply (a dict when standalone).

        Inside a legacy synapse agent the reply is the agent's own ``OutgoingMessage``, built by
        its ``set_response``, which is what that agent publishes.
        """
        res_id = message.get("id", "") if isinstance(message, dict) else ""
        try:
            action, res_id, attributes = self._parse(message)
            with self._request_scope():
                status = self._actions[action](res_id=res_id, attributes=attributes)
            return self._reply(res_id, status)
        except CloudManagerError as exc:
            return self._reply(res_id, error=str(exc))
        except Exception as exc:  # a bug must still give a reply, and keep the agent serving
            LOG.exception("unexpected %s while handling a %s request", type(exc).__name__, self.__resource__)
            return self._reply(res_id, error=f"internal error ({type(exc).__name__}); see the agent's log")

    def _parse(self, message: Any) -> Tuple[str, str, Dict[str, Any]]:
        envelope = parse_envelope(message, self.__resource__, collection_optional=True)
        if envelope.action not in self._actions:
            raise BadRequest(f"unknown action '{echo(envelope.action)}'; use read, create, update, delete or ping")
        # ``monitor`` travels in the attributes, as the synapse agent hands it to plugins.
        attributes = {key: value for key, value in envelope.attributes.items() if key != "monitor"}
        if envelope.monitor is not None:
            attributes["monitor"] = envelope.monitor
        return envelope.action, envelope.cm_id, attributes

    def _reply(self, res_id: Any, status: Optional[Status] = None, error: Optional[str] = None) -> Any:
        extra = {"error": error} if error is not None else {}
        with self._reply_lock:  # set_response reads self.res_id, as in the synapse agent
            self.res_id = res_id
            return self.set_response(status or {}, **extra)

    # -- actions ---------------------------------------------------------------------------

    def ping(self, res_id: str = "", attributes: Optional[Dict[str, Any]] = None) -> Status:
        """synapse-client's discovery probe: an empty status."""
        return {}

    def read(self, res_id: str = "", attributes: Optional[Dict[str, Any]] = None) -> Status:
        """Cloud managers; or a cloud manager's VMs, discovery lists (``DISCOVERY``), or one VM's details."""
        attributes = attributes or {}
        if not res_id:
            return {"cloudmanagers": self.config.section_ids()}
        config, driver = self._section(res_id)
        lists = [(key, verb) for attr, (key, verb) in DISCOVERY.items()
                 if _flag(attributes, attr, present_means_true=True)]
        if lists:
            status: Status = {"cloudmanagers": res_id, "url": config.url}
            for key, verb in lists:
                status[key] = getattr(driver, verb)()
            return status
        name = _text(attributes, "name", required=False)
        changes_since = _iso_time(attributes, "changes_since")
        if changes_since and name is not None:
            raise BadRequest("attribute 'changes_since' lists the VMs changed since then: send it without 'name'")
        if name is None and (changes_since or _flag(attributes, "details")):
            return self._inventory(res_id, config, driver, changes_since)
        if name is None:
            return {"cloudmanagers": res_id, "url": config.url, "VMs": driver.list_server_names()}
        lines = _count(attributes, "consolelog", MAX_CONSOLE_LINES)
        server = driver.find_server(name)
        details = self._details(res_id, config, driver, server)
        if lines:
            details["vm_console_log"] = driver.console_log(server.id, lines)
        return details

    def create(self, res_id: str = "", attributes: Optional[Dict[str, Any]] = None) -> Status:
        """Boot a VM; a VM already bearing the name is an error and nothing is created.

        The request's correlation id goes into the VM's metadata (``CREATE_MARK``) in the create
        itself, so a redelivery of the request, to any agent, finds the VM it made and answers
        the success of the first run instead of "already exists" (``_made_by``).
        """
        attributes = attributes or {}
        _, driver = self._section(res_id)
        name = _text(attributes, "name")
        flavor_ref = _text(attributes, "flavor")
        image_ref = _text(attributes, "image")
        key_name = _text(attributes, "key", required=False)
        user_data = _user_data(attributes)
        options = _create_options(attributes)
        wait = _wait(attributes)
        monitor = _monitor(attributes)
        request_id = correlation_id()
        if request_id:
            options = replace(options, metadata={**options.metadata, CREATE_MARK: request_id})
        flavor = driver.find_flavor(flavor_ref)
        image_id = driver.find_image(image_ref)
        existing = driver.servers_named(name)
        server = _made_by(request_id, existing)
        if server:
            LOG.info("VM %s: created by request %s in an earlier delivery; answering that", server.id,
                     printable(request_id or ""))
        elif existing:
            raise Conflict(
                f"a VM named '{name}' already exists on '{res_id}' (id {existing[0].id}); no VM was created"
            )
        else:
            server = driver.create_server(name, flavor, image_id, key_name, user_data, options)
            server = _keep_only_the_oldest(driver, res_id, name, server, request_id)
        self._changing(res_id, server.id)
        if wait:
            server = driver.wait_for_status(server.id, {states.RUNNING}, wait)
        reply = {"cloudmanager": res_id, "created": True, "vm_name": name, "vm_status": server.status,
                 "vm_id": server.id}
        self._keep_desired(reply, res_id, monitor, DesiredState(states.RUNNING, flavor.id, name))
        return reply

    def update(self, res_id: str = "", attributes: Optional[Dict[str, Any]] = None) -> Status:
        """Change a VM's state (``status``), resize it (``flavor``, ``confirm``, ``revert``), and the
        day-2 actions: ``metadata`` (null removes a key), ``tags`` (replace), ``rename``, ``snapshot``."""
        attributes = attributes or {}
        _, driver = self._section(res_id)
        name = _text(attributes, "name")
        requested = _text(attributes, "status", required=False)
        flavor_ref = _text(attributes, "flavor", required=False)
        confirm = _flag(attributes, "confirm")
        revert = _flag(attributes, "revert")
        day2 = _day2(attributes)
        wait = _wait(attributes)
        monitor = _monitor(attributes)
        if not (requested or flavor_ref or revert or day2 or monitor is not None):
            raise BadRequest("update needs 'status' and/or 'flavor' (or 'revert': true), or a day-2 action: "
                             "'snapshot', 'metadata', 'tags', 'rename', or 'monitor'")
        row = states.normalise(requested) if requested else None
        stop_at_verify = bool(row and row.by_resize)
        if stop_at_verify and (confirm or revert):
            raise BadRequest(f"status {row.target} stops before the confirmation: send it without 'confirm' and 'revert'")
        flavor = driver.find_flavor(flavor_ref) if flavor_ref else None
        server = driver.find_server(name)
        self._changing(res_id, server.id)
        if day2.rename and day2.rename != server.name and driver.servers_named(day2.rename):
            raise Conflict(f"cannot rename VM '{server.name}': a VM named '{day2.rename}' already exists on '{res_id}'")
        reply: Status = {"cloudmanager": res_id, "vm_name": server.name, "vm_id": server.id}
        desired = (_desired_after_update(driver, server, requested, flavor, revert, monitor)
                   if self._monitoring(res_id, server.id, monitor) else None)
        actions = self._edit(driver, server, day2)
        if day2.rename:
            reply["vm_name"] = day2.rename
        if row:
            action = states.plan(server.status, requested, resizing=flavor is not None)
            if action:
                try:
                    _run_state_action(driver, server, action)
                    actions.append(action.value)
                except Conflict as refused:
                    server = _reached_by_an_earlier_run(driver, server, requested, flavor is not None, wait, refused)
                if wait:
                    server = driver.wait_for_status(server.id, row.final_statuses, wait)
        if flavor or revert:
            server, resized = driver.advance_resize(server, flavor, confirm=confirm, revert=revert, wait=wait,
                                                    stop_at_verify=stop_at_verify, request_id=correlation_id())
            actions.extend(resized)
            reply["vm_flavor"] = flavor.id if flavor else driver.flavor_id(server.flavor_name)
        if day2.snapshot:
            image = _snapshot_once(driver, server, day2.snapshot)
            actions.append("snapshot")
            reply["image_id"] = image.id
            reply["image_status"] = (driver.wait_for_image(image.id, wait) if wait
                                     else image.status or driver.image_status(image.id))
        reply["vm_status"] = server.status
        reply["vm_actions"] = actions
        if desired is not None:
            desired = DesiredState(desired.status, desired.flavor, reply["vm_name"])
        self._keep_desired(reply, res_id, monitor, desired)
        return reply

    @staticmethod
    def _edit(driver: CloudDriver, server: Server, day2: "Day2") -> list:
        """Metadata, tags and name: changes that need no particular VM state, run first."""
        actions = []
        if day2.metadata_set:
            driver.set_metadata(server.id, day2.metadata_set)
            actions.append("set_metadata")
        removed = [key for key in day2.metadata_remove if key in server.metadata]
        if removed:
            driver.delete_metadata(server.id, removed)
            actions.append("delete_metadata")
        if day2.tags is not None and sorted(day2.tags) != sorted(server.tags):
            driver.set_tags(server.id, list(day2.tags))
            actions.append("set_tags")
        if day2.rename and day2.rename != server.name:
            driver.rename(server.id, day2.rename)
            actions.append("rename")
        return actions

    def delete(self, res_id: str = "", attributes: Optional[Dict[str, Any]] = None) -> Status:
        """Delete a VM, running or not, as documented.

        A section with ``protect_running = true`` refuses a running VM unless ``force: true``.
        A redelivered delete that finds no VM answers that it is deleted: an earlier delivery
        may have deleted it, and the VM is gone either way. A first delivery naming no VM is an
        error, as in the seed.
        """
        attributes = attributes or {}
        config, driver = self._section(res_id)
        name = _text(attributes, "name")
        force = _flag(attributes, "force")
        wait = _wait(attributes)
        try:
            server = driver.find_server(name)
        except NotFound:
            if not redelivered():
                raise
            LOG.info("no VM '%s' for a redelivered delete: already deleted", printable(name))
            return {"cloudmanager": res_id, "deleted": True, "vm_name": name, "vm_status": DELETED,
                    "vm_id": name if is_uuid(name) else None}
        if config.protect_running and server.status == states.RUNNING and not force:
            raise Conflict(
                f"VM '{server.name}' is {server.status} and cloud manager '{res_id}' protects running VMs "
                "(protect_running = true): shut it down first (status: shutdown) or send force: true"
            )
        self._changing(res_id, server.id)
        driver.delete(server.id)
        if self.desired_states is not None:  # deleted on request: not a drift
            self.desired_states.forget(res_id, server.id)
        status = driver.wait_for_status(server.id, {DELETED}, wait).status if wait else server.status
        return {"cloudmanager": res_id, "deleted": True, "vm_name": server.name, "vm_status": status,
                "vm_id": server.id}

    # -- helpers ---------------------------------------------------------------------------

    @contextmanager
    def _request_scope(self) -> Iterator[None]:
        """One request's run: the VMs it marks under change (``_changing``) stay so until it ends,
        exceptions included."""
        with ExitStack() as changing:
            token = _CHANGING.set(changing)
            try:
                yield
            finally:
                _CHANGING.reset(token)

    def _changing(self, res_id: str, vm_id: str) -> None:
        """Tell the recorder that this request is changing the VM, until the request ends: its
        desired state is handed over only then (``_keep_desired``), so the compliance monitor
        gives the VM no verdict meanwhile instead of judging the change against the old one."""
        if self.desired_states is None:
            return
        changing = _CHANGING.get()
        if changing is None:
            raise RuntimeError("a VM is changed outside process(): no request to mark it under change")
        changing.enter_context(self.desired_states.changing(res_id, vm_id))

    def _monitoring(self, res_id: str, vm_id: str, monitor: Optional[bool]) -> bool:
        """Whether this update touches a desired state (which may cost a flavor look-up)."""
        if self.desired_states is None or monitor is False:
            return False
        return bool(monitor) or self.desired_states.knows(res_id, vm_id)

    def _keep_desired(self, reply: Status, res_id: str, monitor: Optional[bool],
                      desired: Optional[DesiredState]) -> None:
        """Hand a VM's desired state to the recorder: ``monitor`` true records it, false forgets
        it, absent lets a monitored VM's desired state follow the change just made."""
        if self.desired_states is None:
            return
        if monitor is False:
            self.desired_states.forget(res_id, reply["vm_id"])
        elif monitor and desired is not None:
            self.desired_states.record(res_id, reply["vm_id"], desired)
        elif desired is not None:
            self.desired_states.follow(res_id, reply["vm_id"], desired)
        if monitor is not None:
            reply["vm_monitored"] = monitor

    def _section(self, res_id: str) -> Tuple[CloudManagerConfig, CloudDriver]:
        """The section's config and its long-lived driver (rebuilt only if the section changed)."""
        if not res_id:
            raise BadRequest("'id' must name a cloud manager (read with an empty id lists them)")
        config = self.config.get(res_id)
        with self._drivers_lock:
            driver = self._drivers.get(res_id)
            if driver is None or driver.config != config:
                driver = driver_class(config.cm_type, config.where("cm_type"))(config, self.events)
                self._drivers[res_id] = driver
            return config, driver

    def driver(self, res_id: str) -> CloudDriver:
        """The driver serving a cloud manager id (check-config authenticates through it)."""
        return self._section(res_id)[1]

    def event_sections(self) -> List[str]:
        """The valid sections: the agent's change feed watches their VMs."""
        return [name for name, section in self.config.all().items() if not isinstance(section, CloudManagerError)]

    def vm_view(self, res_id: str, server: Server) -> Status:
        """The VM-details keys of a VM already read, with no request (the console only as already
        known): what a change event carries."""
        config, driver = self._section(res_id)
        return self._details(res_id, config, driver, server, driver.known_console(server))

    def _inventory(self, res_id: str, config: CloudManagerConfig, driver: CloudDriver,
                   changes_since: Optional[str]) -> Status:
        """Every VM (or every VM changed since ``changes_since``, deleted ones included) in one reply,
        from one Nova request per page: the seed keys, each VM's id and state (``servers``, the
        CLI's table) and each VM's details keys (``vm_details``, consoles only as already known)."""
        servers = driver.list_servers(changes_since)
        status: Status = {"cloudmanagers": res_id, "url": config.url, "VMs": [server.name for server in servers],
                          "servers": [{"id": s.id, "name": s.name, "status": s.status} for s in servers],
                          "vm_details": [self._details(res_id, config, driver, s, driver.known_console(s))
                                         for s in servers]}
        if changes_since:
            status["changes_since"] = changes_since
        return status

    def _details(self, res_id: str, config: CloudManagerConfig, driver: CloudDriver, server: Server,
                 console: Optional[Console] = None) -> Status:
        console = console or driver.console(server)
        details = {
            "cloudmanager": res_id,
            "url": config.url,
            "vm_name": server.name,
            "vm_id": server.id,
            "vm_status": server.status,
            "vm_task_state": server.task_state,
            "vm_vcpus": server.vcpus,
            "vm_flavor": driver.flavor_id(server.flavor_name) or server.flavor_name,
            "vm_flavor_name": server.flavor_name,
            # The seed shows a port number in a string: never prose, which a controller would parse.
            "vm_vnc_port": str(console.port) if console.url else "",
            "vm_console_url": console.url,
            "vm_addresses": server.addresses,
            "vm_image": server.image_id or None,
            "vm_key_name": server.key_name,
            "vm_availability_zone": server.availability_zone,
            "vm_metadata": server.metadata,
            "vm_tags": server.tags,
            "vm_created": server.created,
            "vm_updated": server.updated,
        }
        if not console.url:
            details["vm_console_unavailable"] = console.reason
        if server.fault:
            details["vm_fault"] = server.fault
        return details


# -- attribute validation -------------------------------------------------------------------


def _text(
    attributes: Dict[str, Any], key: str, required: bool = True, aliases: Tuple[str, ...] = (),
    max_length: int = MAX_TEXT,
) -> Optional[str]:
    """A string attribute (numbers accepted, as the seed sends flavor ids both ways), stripped."""
    present = [k for k in (key, *aliases) if attributes.get(k) is not None]
    if not present:
        if required:
            raise BadRequest(f"attribute '{key}' is required")
        return None
    value = text_value(attributes[present[0]])
    if value is None:
        raise BadRequest(f"attribute '{present[0]}' must be a string, got {json_type(attributes[present[0]])}")
    checked_text(f"attribute '{present[0]}'", value, max_length)
    if not value:
        if required:
            raise BadRequest(f"attribute '{present[0]}' must not be empty")
        return None
    return value


def _flag(attributes: Dict[str, Any], key: str, present_means_true: bool = False) -> bool:
    """A boolean attribute (``values.parse_bool``); absent is false. ``present_means_true``: any
    other value that is not null asks too (``listimages: "all"``)."""
    if key not in attributes:
        return False
    try:
        return parse_bool(attributes[key])
    except ValueError as err:
        if present_means_true and attributes[key] is not None:
            return True
        raise BadRequest(f"attribute '{key}' {err}") from None


def _iso_time(attributes: Dict[str, Any], key: str) -> Optional[str]:
    """An ISO 8601 date and time (``2026-11-25T10:00:00Z``), passed on as given; absent is None."""
    value = attributes.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str) or "T" not in value:
            raise ValueError
        datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"attribute '{key}' must be an ISO 8601 date and time such as "
                         f"2026-11-25T10:00:00Z, got {_given(value)}") from None
    return value.strip()


def _given(value: Any) -> str:
    """A bad value as an error names it: a string quoted (printable, cut), anything else by its JSON type."""
    return f"'{printable(echo(value))}'" if isinstance(value, str) else json_type(value)


def _count(attributes: Dict[str, Any], key: str, most: int) -> Optional[int]:
    """A whole number from 1 to ``most`` (a JSON number or digits)."""
    value = attributes.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise BadRequest(f"attribute '{key}' must be a whole number of lines, got {json_type(value)}")
    if not 1 <= int(value) <= most:
        raise BadRequest(f"attribute '{key}' must be between 1 and {most}")
    return int(value)


def _monitor(attributes: Dict[str, Any]) -> Optional[bool]:
    """synapse's ``monitor``: true, false, or None when the request leaves it out."""
    return _flag(attributes, "monitor") if attributes.get("monitor") is not None else None


def _desired_after_update(driver: CloudDriver, server: Server, requested: Optional[str], flavor: Any,
                          revert: bool, monitor: Optional[bool]) -> Optional[DesiredState]:
    """The desired state an update sets: after a state change or a resize, the state it leads to;
    with ``monitor: true`` alone, the VM as it is now; None when the update changes neither.
    A revert goes back to a flavor the VM no longer names: the flavor is then left unchecked."""
    current_flavor = None if revert else (flavor.id if flavor else driver.flavor_id(server.flavor_name))
    if requested or flavor or revert:
        return desired_after(requested, server.status, current_flavor)
    if monitor:  # the VM as it is, or as it settles when caught in a build or a reboot
        return DesiredState(SETTLES.get(server.status, server.status), current_flavor)
    return None


def _wait(attributes: Dict[str, Any]) -> Optional[float]:
    """``wait``: seconds to wait for the VM's final state (absent or 0: answer at once)."""
    value = attributes.get("wait")
    if value is None or value is False:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"attribute 'wait' must be a number of seconds, got {json_type(value)}") from None
    if not 0 <= seconds <= MAX_WAIT:
        raise BadRequest(f"attribute 'wait' must be between 0 and {MAX_WAIT:g} seconds")
    return seconds or None


def _names(attributes: Dict[str, Any], key: str) -> Optional[Tuple[str, ...]]:
    """A list of names or ids: a JSON array of strings, or one string (comma-separated)."""
    value = attributes.get(key)
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise BadRequest(f"attribute '{key}' must be a list of names or ids (strings), got {json_type(value)}")
    names = tuple(item.strip() for item in items if item.strip())
    for name in names:
        checked_text(f"attribute '{key}'", name, MAX_TEXT)
    if not names:
        raise BadRequest(f"attribute '{key}' must name at least one")
    return names


def _metadata(attributes: Dict[str, Any], key: str = "metadata") -> Dict[str, str]:
    """An object of strings (clouds keep metadata as text)."""
    value = attributes.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"attribute '{key}' must be an object of strings, got {json_type(value)}")
    wrong = sorted(k for k, v in value.items() if not isinstance(v, str))
    if wrong:
        raise BadRequest(f"attribute '{key}' must be an object of strings; not a string: {', '.join(wrong)}"[:300])
    for item in (*value, *value.values()):
        checked_text(f"attribute '{key}'", item, MAX_TEXT)
    return dict(value)


def _create_options(attributes: Dict[str, Any]) -> CreateOptions:
    """The optional create attributes, type-checked; names are resolved by the driver."""
    networks = _names(attributes, "networks")
    if networks and len(networks) > 1 and {n.lower() for n in networks} & {"auto", "none"}:
        raise BadRequest("attribute 'networks': 'auto' and 'none' stand alone, not in a list of networks")
    return CreateOptions(
        networks=networks,
        security_groups=_names(attributes, "security_groups") or (),
        availability_zone=_text(attributes, "availability_zone", required=False),
        metadata=_metadata(attributes),
        tags=_names(attributes, "tags") or (),
        config_drive=_flag(attributes, "config_drive"),
        description=_text(attributes, "description", required=False),
        server_group=_text(attributes, "server_group", required=False),
    )


@dataclass(frozen=True)
class Day2:
    """The day-2 attributes of an ``update``, type-checked."""

    metadata_set: Dict[str, str]
    metadata_remove: Tuple[str, ...]
    tags: Optional[Tuple[str, ...]]
    rename: Optional[str]
    snapshot: Optional[str]

    def __bool__(self) -> bool:
        return bool(self.metadata_set or self.metadata_remove or self.tags is not None or self.rename
                    or self.snapshot)


def _day2(attributes: Dict[str, Any]) -> Day2:
    metadata = attributes.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest(f"attribute 'metadata' must be an object of strings (null removes a key), "
                         f"got {json_type(metadata)}")
    metadata = metadata or {}
    removed = tuple(sorted(key for key, value in metadata.items() if value is None))
    tags = attributes.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
        raise BadRequest(f"attribute 'tags' must be a list of strings (empty removes them all), got {json_type(tags)}")
    return Day2(
        metadata_set=_metadata({"metadata": {k: v for k, v in metadata.items() if v is not None}}),
        metadata_remove=removed,
        tags=tuple(tags) if tags is not None else None,
        rename=_text(attributes, "rename", required=False),
        snapshot=_text(attributes, "snapshot", required=False),
    )


def _user_data(attributes: Dict[str, Any]) -> Optional[bytes]:
    """``user_data`` (or the seed's ``user-data``): base64 text, decoded here to catch typos early."""
    text = _text(attributes, "user_data", required=False, aliases=("user-data",), max_length=MAX_USER_DATA)
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("attribute 'user_data' must be base64-encoded") from None


# -- effects that must not happen twice ------------------------------------------------------


def _made_by(request_id: Optional[str], namesakes: List[Server]) -> Optional[Server]:
    """The VM an earlier delivery of this request created, when it is the one that stays.

    Of several VMs bearing a name only the oldest stays (``_keep_only_the_oldest``): a VM of
    this request that is not the oldest was, or is being, deleted by the run that made it,
    whose answer was "already exists", so a redelivery answers that too.
    """
    if not request_id or not namesakes:
        return None
    oldest = min(namesakes, key=_age_order)
    return oldest if oldest.metadata.get(CREATE_MARK) == request_id else None


def _keep_only_the_oldest(driver: CloudDriver, res_id: str, name: str, created: Server,
                          request_id: Optional[str]) -> Server:
    """After a create, look again: of several VMs bearing the name, only the oldest stays.

    The name check before a create cannot stop two agents creating the same name at the same
    moment (Nova does not enforce unique names). Every request that created one looks again;
    all of them order the VMs the same way (creation time, then id), so exactly one keeps its
    VM and each other one deletes its own and answers as if the name had existed before.
    When the oldest is this request's own (the request ran twice at once: a redelivery to
    another agent while the first run went on), it is the request's VM and its answer.
    """
    oldest = _keep_the_oldest(driver.servers_named(name), created.id, driver.delete)
    if oldest is None:
        return created
    if _made_by(request_id, [oldest]):
        return oldest
    raise Conflict(f"a VM named '{name}' already exists on '{res_id}' (id {oldest.id}); no VM was created")


Made = TypeVar("Made", Server, Image)


def _keep_the_oldest(found: Sequence[Made], made_id: str, delete: Callable[[str], None]) -> Optional[Made]:
    """Of the items a look made after this run made ``made_id`` (``found``), only the oldest stays.

    Every run that made one looks again and orders them the same way (``_age_order``), so one
    stays whichever run looks first, and each run deletes only what it made itself. Returns
    the older one ``made_id`` was deleted for, or None when ``made_id`` stays. What this run
    made but the look does not show counts as the newest.
    """
    others = [item for item in found if item.id != made_id]
    if not others:
        return None
    oldest = min(others, key=_age_order)
    mine = next((item for item in found if item.id == made_id), None)
    if mine is not None and _age_order(mine) < _age_order(oldest):
        return None
    delete(made_id)
    return oldest


def _age_order(item: Union[Server, Image]) -> Tuple[str, str]:
    return (item.created or "", item.id)


def _snapshot_once(driver: CloudDriver, server: Server, image_name: str) -> Image:
    """Take the snapshot an update asks for: one image per request, even when it is redelivered.

    A second createImage makes a second image. The request's correlation id goes on the image
    (the property ``SNAPSHOT_MARK``, which Nova passes to Glance in the createImage itself: no
    extra request). A redelivered request first looks for the image of an earlier run and
    answers it. After a snapshot every run looks again, as a create does: two runs of one
    request at once (a redelivery to another agent while the first run went on) may each
    have made an image, and only the oldest stays (``_keep_the_oldest``). That look also gives
    the image's status, so a first snapshot costs no more requests than an unrecorded one.
    Nova refuses (409) a snapshot while another runs on the VM: when the other is this
    request's (both runs at once), its image is the answer.
    """
    request_id = correlation_id()
    if not request_id:  # the legacy synapse agent: unrecorded
        return Image(id=driver.snapshot(server.id, image_name))
    if redelivered():
        earlier = _snapshot_of(driver, request_id)
        if earlier:
            LOG.info("VM %s: snapshot %s taken by request %s in an earlier run; answering that", server.id,
                     earlier.id, printable(request_id))
            return earlier
    try:
        made = driver.snapshot(server.id, image_name, {SNAPSHOT_MARK: request_id})
    except Conflict:
        earlier = _snapshot_of(driver, request_id)
        if earlier is None:
            raise
        LOG.info("VM %s: snapshot %s of request %s is under way in another run; answering that", server.id,
                 earlier.id, printable(request_id))
        return earlier
    try:
        found = driver.images_with(SNAPSHOT_MARK, request_id)
    except CloudManagerError as exc:
        raise BackendError(f"the snapshot image {made} was made, but looking for another run's image of "
                           f"this request failed: {exc}") from None
    oldest = _keep_the_oldest(found, made, driver.delete_image)
    if oldest:
        LOG.info("VM %s: snapshot %s deleted: another run of request %s made %s first; answering that",
                 server.id, made, printable(request_id), oldest.id)
        return oldest
    return next((image for image in found if image.id == made), Image(id=made))


def _snapshot_of(driver: CloudDriver, request_id: str) -> Optional[Image]:
    """The image an earlier run of this request made: the oldest carrying its id (a newer one is
    being deleted by the run that made it), or None."""
    images = driver.images_with(SNAPSHOT_MARK, request_id)
    return min(images, key=_age_order) if images else None


def _reached_by_an_earlier_run(driver: CloudDriver, server: Server, requested: str, resizing: bool,
                               wait: Optional[float], refused: Conflict) -> Server:
    """The VM, when Nova refused (409) a redelivered state change because the earlier run of the
    same request got there; else ``refused`` is raised.

    An agent that loses its broker connection (its node died) goes on running what it had
    started while the broker gives the same requests to another agent: both read the VM before
    either acted, the first start (or stop...) wins and the second meets Nova's 409 ("while it
    is in vm_state active"). Once the VM has no task, a VM where the request wanted it was put
    there by that earlier run: success, with no action of this run, as for a VM already there.
    """
    if not redelivered():
        raise refused
    settled = driver.wait_for_status(server.id, (), wait or SETTLE_WAIT, done=lambda current: not current.task_state)
    if states.plan(settled.status, requested, resizing) is not None:
        raise refused
    LOG.info("VM %s: already %s, by an earlier run of this redelivered request", server.id, settled.status)
    return settled


def _run_state_action(driver: CloudDriver, server: Server, action: states.ServerAction) -> None:
    """Run a state action; a reboot runs at most once per request, even if it is redelivered.

    A reboot is the one state action that is not idempotent: a request redelivered after the
    agent died mid-reboot would reboot the VM again. Its correlation id is written into the
    VM's metadata before the reboot; a request finding its own id there skips the reboot.
    Nova refuses metadata on a VM in ERROR or with a task under way; a hard reboot out of those
    states still runs, unrecorded.
    """
    request_id = correlation_id() if action in _REBOOTS else None
    if request_id is None:
        driver.set_state(server.id, action)
    elif server.metadata.get(REBOOT_MARK) == request_id:
        LOG.info("VM %s: the reboot of request %s already ran; not rebooting again", server.id, printable(request_id))
    else:
        try:
            driver.set_metadata(server.id, {REBOOT_MARK: request_id})
        except Conflict as refused:  # Nova takes no metadata in ERROR or during a task: reboot unrecorded
            LOG.warning("VM %s: reboot not recorded, a redelivery would run it again: %s", server.id, refused)
        driver.set_state(server.id, action)
