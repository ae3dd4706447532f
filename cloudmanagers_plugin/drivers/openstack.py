"""The OpenStack driver: the only code that knows Keystone, Nova and Glance.

Speed by design:
- ONE keystoneauth1 session per section for the life of the process: the token is reused
  until it nears expiry (keystoneauth re-authenticates 120 s before) and refreshed on a 401;
  concurrent threads share it (keystoneauth locks the re-authentication). Endpoints are looked
  up in the catalog once per token, the environment once per session (``session.py``).
- Nova is pinned to a microversion (>= 2.47) that embeds the flavor in every server, so a VM
  details read is one GET; flavors are cached (they change rarely) to give their ids.
- An exact-name lookup asks Nova's (regex) ``name`` filter for ``^name$`` and re-checks
  the names client-side, so no VM list is scanned.
Every request goes through ``_call``: errors are turned into project errors in one place
(``_translate``), and a rate-limited answer (``ratelimit``) is waited out and sent again when the
request is safe to repeat.
"""

import logging
import re
import threading
import time
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar, Union
from urllib.parse import parse_qs, urlencode, urlparse

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1.identity import v3
import novaclient
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc
from novaclient.v2.servers import ServerManager

from ..config import CloudManagerConfig
from ..errors import (
    AuthError, BackendError, BadRequest, CloudManagerError, ConfigError, Conflict, NotFound, RateLimited,
)
from ..states import RUNNING, ServerAction
from . import views
from .base import NO_EVENTS, CloudDriver, Console, CreateOptions, DriverEvents, Flavor, Image, Server, is_uuid
from .catalog import Catalog
from .expiring import ExpiringCache
from .ratelimit import raise_when_limited
from .session import DriverSession

LOG = logging.getLogger(__name__)
T = TypeVar("T")
# ``_call``'s ``repeat``: True (safe to send again), False (never), or a check run before sending
# again that returns the result if the first request did take effect after all.
Repeat = Union[bool, Callable[[], Any]]

PAGE_SIZE = 1000
FLAVOR_CACHE_SECONDS = 600.0
NAME_CACHE_SECONDS = 600.0  # networks, security groups, zones, server groups and image names named by creates
NAME_CACHE_SIZE = 1024
TAGS_AT_CREATE = (2, 52)  # the Nova microversion that accepts ``tags`` in a create
CONSOLE_CACHE_SECONDS = 300.0  # below Nova's default console token TTL (600 s)
CONSOLE_CACHE_SIZE = 1024
NOT_READ_IN_A_LIST = "not read in an inventory list: read the VM by name for its console"

# Every state action -> the novaclient call that runs it (a ServerManager method, given the VM id).
NOVA_ACTIONS: Mapping[ServerAction, Callable[[ServerManager, str], Any]] = {
    ServerAction.PAUSE: ServerManager.pause,
    ServerAction.UNPAUSE: ServerManager.unpause,
    ServerAction.SUSPEND: ServerManager.suspend,
    ServerAction.RESUME: ServerManager.resume,
    ServerAction.START: ServerManager.start,
    ServerAction.STOP: ServerManager.stop,
    ServerAction.REBOOT_SOFT: partial(ServerManager.reboot, reboot_type="SOFT"),
    ServerAction.REBOOT_HARD: partial(ServerManager.reboot, reboot_type="HARD"),
    ServerAction.CONFIRM_RESIZE: ServerManager.confirm_resize,
    ServerAction.REVERT_RESIZE: ServerManager.revert_resize,
    ServerAction.SHELVE: ServerManager.shelve,
    ServerAction.UNSHELVE: ServerManager.unshelve,
}



def _send(request: Callable[[], T], resend: bool) -> T:
    """Send one request; once more, if ``resend``, when its connection was dropped as it went out.

    HTTP servers close a kept-alive connection after a few idle seconds (gunicorn 2 s, Apache
    5 s). A request sent on it at that moment fails with "connection reset" or "closed without
    response" although the service is up, and the connection pool cannot see it coming: a wait
    that polls every 2.4 s meets it every few dozen polls. A request that is safe to repeat
    (reads, idempotent actions) goes once more, on a new connection; a service that is really
    down fails the second time too. A create is not resent blindly (its ``repeat`` is a check).
    """
    try:
        return request()
    except ks_exc.ConnectFailure as dropped:
        if not resend:
            raise
        LOG.debug("connection dropped (%s); sending the request again", dropped)
        return request()


class OpenStackDriver(CloudDriver):
    """One OpenStack project (a config section), reached with one long-lived session."""

    def __init__(self, config: CloudManagerConfig, events: DriverEvents = NO_EVENTS):
        super().__init__(config, events)
        verify = False if config.insecure else (config.cacert or True)
        self._session = DriverSession(auth=_auth(config), verify=verify, timeout=config.timeout)
        # Every answer, Keystone's included, passes these hooks in order: report it, then raise
        # on a rate limit.
        self._session.session.hooks["response"] = [self._report, raise_when_limited]
        endpoint = {"interface": config.interface, "region_name": config.region_name}
        try:
            self._nova = nova_client.Client(
                config.compute_api_version,
                session=self._session,
                endpoint_override=config.compute_url,
                endpoint_type=config.interface,
                region_name=config.region_name,
            )
        except nova_exc.UnsupportedVersion:
            raise ConfigError(
                f"{config.where('compute_api_version')} is {config.compute_api_version}, above what "
                f"python-novaclient supports ({novaclient.API_MAX_VERSION.get_string()})"
            ) from None
        self._compute = ks_adapter.Adapter(
            self._session, service_type="compute", endpoint_override=config.compute_url, **endpoint
        )
        self._image = ks_adapter.Adapter(self._session, service_type="image", **endpoint)
        self._network = ks_adapter.Adapter(self._session, service_type="network", **endpoint)
        self._lock = threading.Lock()
        self._flavors: Dict[str, Flavor] = {}
        self._flavors_loaded = 0.0
        self._consoles: ExpiringCache[str, Console] = ExpiringCache(CONSOLE_CACHE_SECONDS, CONSOLE_CACHE_SIZE)
        self._network_names = Catalog("network", lambda: [
            (n["id"], n.get("name", "")) for n in self._neutron_pages("list networks", "networks", "networks")],
            NAME_CACHE_SECONDS)
        self._group_names = Catalog("security group", lambda: [
            (g["id"], g["name"]) for g in self.list_security_groups()], NAME_CACHE_SECONDS)
        self._zone_names = Catalog("availability zone", lambda: [(z, z) for z in self.list_zones()],
                                   NAME_CACHE_SECONDS)
        self._server_group_names = Catalog("server group", self._list_server_groups, NAME_CACHE_SECONDS)
        self._image_ids: ExpiringCache[str, str] = ExpiringCache(NAME_CACHE_SECONDS, NAME_CACHE_SIZE)

    def _report(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """requests response hook: tell ``events`` of the answer, and of a token request."""
        method = response.request.method
        self.events.cloud_request(self.config.name, method, response.status_code)
        if method == "POST" and response.request.path_url.rstrip("/").endswith("/auth/tokens"):
            self.events.token_request(self.config.name)
        return response

    # -- errors and rate limits -----------------------------------------------------------

    def _call(self, doing: str, request: Callable[[], T], repeat: Repeat = True) -> T:
        """Run one OpenStack request with its errors translated.

        A rate-limited answer (429/503 with ``Retry-After``) is waited out and the request sent
        again while the next try starts within the section's ``timeout`` of the first, if
        ``repeat`` allows it: reads and the idempotent actions repeat; a create first checks
        whether its VM exists after all (``repeat`` is that check), so it is never sent twice
        blindly; a snapshot or a resize is not repeated. Those that repeat are also sent once more
        when their kept-alive connection was dropped as they went out (``_send``).
        """
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                with self._translate(doing):
                    return _send(request, resend=repeat is True)
            except RateLimited as limited:
                waited = time.monotonic() - started
                if repeat is False or waited + limited.retry_after > self.config.timeout:
                    raise RateLimited(
                        f"cloud manager '{self.config.name}': OpenStack rate-limited the request to {doing} "
                        f"(HTTP {limited.status}, {tries} {'try' if tries == 1 else 'tries'} over {waited:.1f} s) "
                        f"and asks to retry after {limited.retry_after:g} s"
                        + ("" if repeat is not False else "; it was not sent again: it is not safe to repeat"),
                        status=limited.status, retry_after=limited.retry_after,
                    ) from None
                LOG.warning("cloud manager '%s': rate-limited (HTTP %s) while trying to %s; again in %g s",
                            self.config.name, limited.status, doing, limited.retry_after)
                time.sleep(limited.retry_after)
                if callable(repeat):
                    done = repeat()
                    if done is not None:
                        return done


    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        """Turn every OpenStack or connection error into a project error that says what to fix."""
        section = f"cloud manager '{self.config.name}'"
        try:
            yield
        except CloudManagerError:
            raise
        except (nova_exc.Unauthorized, ks_exc.Unauthorized):
            raise AuthError(
                f"{section}: Keystone at {self.config.auth_url} refused the credentials (401) " + (
                    f"of application credential '{self.config.application_credential_id or self.config.application_credential_name}' "
                    f"(trying to {doing}); check application_credential_id/_name and its secret (it may have expired "
                    "or been deleted)" if self.config.uses_application_credential else
                    f"of user '{self.config.username}' for project '{self.config.project_name}' (trying to {doing}); "
                    "check username, password, project and domains")
            ) from None
        except (ks_exc.DiscoveryFailure, ks_exc.InvalidResponse):
            raise BackendError(
                f"{section}: {self.config.auth_url} did not answer as a Keystone identity API (trying to {doing}); "
                "check keystone_base_url: it must be Keystone's URL (usually port 5000, path /v3 or /identity/v3)"
            ) from None
        except (nova_exc.Forbidden, ks_exc.Forbidden) as exc:
            raise AuthError(f"{section}: not allowed to {doing} (403): {_message(exc)}") from None
        except (nova_exc.NotFound, ks_exc.NotFound) as exc:
            raise NotFound(f"{section}: {doing}: not found (404): {_message(exc)}") from None
        except (nova_exc.Conflict, ks_exc.Conflict) as exc:
            raise Conflict(f"{section}: cannot {doing} now (409): {_message(exc)}") from None
        except (nova_exc.BadRequest, ks_exc.BadRequest) as exc:
            raise BadRequest(f"{section}: OpenStack rejected the request to {doing} (400): {_message(exc)}") from None
        except (nova_exc.OverLimit, nova_exc.RateLimit, ks_exc.RequestEntityTooLarge) as exc:
            raise Conflict(f"{section}: quota or rate limit hit while trying to {doing}: {_message(exc)}") from None
        except ks_exc.EndpointNotFound:
            raise BackendError(
                f"{section}: the service catalog has no endpoint to {doing} "
                f"(interface {self.config.interface}, region {self.config.region_name or 'any'}); "
                "check region_name and interface"
            ) from None
        except ks_exc.SSLError:
            raise BackendError(
                f"{section}: TLS verification failed while trying to {doing}; set cacert to the CA bundle"
            ) from None
        except ks_exc.ConnectTimeout:
            raise BackendError(
                f"{section}: OpenStack did not answer within {self.config.timeout:g} s while trying to {doing}; "
                "check the service, or raise timeout"
            ) from None
        except (ks_exc.ConnectFailure, ks_exc.UnknownConnectionError) as exc:
            raise BackendError(
                f"{section}: cannot connect to OpenStack while trying to {doing} ({_endpoint_of(exc)}); "
                "check keystone_base_url / nova_base_url and that the service is up"
            ) from None
        except (nova_exc.ClientException, ks_exc.HttpError) as exc:
            code = getattr(exc, "code", None) or getattr(exc, "http_status", "?")
            raise BackendError(f"{section}: OpenStack failed to {doing} (HTTP {code}): {_message(exc)}") from None
        except ks_exc.ClientException as exc:
            raise BackendError(f"{section}: cannot {doing}: {type(exc).__name__}") from None

    # -- identity -----------------------------------------------------------------------

    def authenticate(self) -> None:
        self._call("authenticate", self._session.get_token)

    def project_id(self) -> Optional[str]:
        """The token's project (keystoneauth keeps it with the token: no request while it is valid)."""
        return self._call("authenticate", self._session.get_project_id)

    def compute_max_version(self) -> str:
        """The compute API's highest microversion: one GET of its version document."""
        body = self._call("reach the compute API", lambda: self._compute.get("/").json())
        version = (body.get("version") or {}).get("version")
        if not version:
            raise BackendError(
                f"cloud manager '{self.config.name}': the compute endpoint "
                f"{self.config.compute_url or '(from the catalog)'} did not answer as Nova's API v2.1; "
                "check nova_base_url, or the catalog's compute endpoint"
            )
        return version

    # -- servers ------------------------------------------------------------------------

    def list_server_names(self) -> List[str]:
        """All pages of ``GET /servers`` (names only): one request per page."""
        return [server["name"] for server in self._nova_pages("list VMs", "/servers", "servers")]

    def list_servers(self, changes_since: Optional[str] = None) -> List[Server]:
        """All pages of ``GET /servers/detail`` (Nova's ``changes-since`` adds the deleted VMs)."""
        query = {"changes-since": changes_since} if changes_since else {}
        return [views.server(server) for server in self._nova_pages("list VMs", "/servers/detail", "servers", **query)]

    def get_server(self, server_id: str) -> Server:
        _, body = self._call(f"read VM {server_id}", lambda: self._nova.client.get(f"/servers/{server_id}"))
        return views.server(body["server"])

    def servers_named(self, name: str) -> List[Server]:
        query = urlencode({"name": f"^{re.escape(name)}$"})  # Nova's name filter is a regex
        _, body = self._call(f"look up VM '{name}'", lambda: self._nova.client.get(f"/servers/detail?{query}"))
        return [views.server(s) for s in body.get("servers", []) if s.get("name") == name]

    # -- paging -------------------------------------------------------------------------

    def _nova_pages(self, doing: str, path: str, key: str, **query: Any) -> Iterator[Dict]:
        """Every item of a paged Nova list: one request per page, following the ``<key>_links`` marker."""
        query["limit"] = PAGE_SIZE
        while True:
            url = f"{path}?{urlencode(query)}"
            _, body = self._call(doing, lambda: self._nova.client.get(url))
            yield from body.get(key) or []
            marker = _next_marker(body.get(f"{key}_links"))
            if not marker:
                return
            query["marker"] = marker

    def _neutron_pages(self, doing: str, collection: str, key: str, **query: Any) -> Iterator[Dict]:
        """Every item of a Neutron list: one request per page, following the ``<key>_links`` next link."""
        url: Optional[str] = f"/v2.0/{collection}?{urlencode({**query, 'limit': PAGE_SIZE})}"
        while url:
            page = url
            body = self._call(doing, lambda: self._network.get(page).json())
            items = body.get(key) or []
            yield from items
            url = _next_href(body.get(f"{key}_links")) if items else None

    # -- discovery ----------------------------------------------------------------------

    def list_flavors(self) -> List[Dict]:
        return [views.flavor(body) for body in self._flavor_bodies()]

    def _flavor_bodies(self) -> List[Dict]:
        """All flavors (public and those shared with the project); refreshes the flavor cache."""
        bodies = list(self._nova_pages("list flavors", "/flavors/detail", "flavors", is_public="None"))
        self._flavors = {
            b["id"]: Flavor(id=b["id"], name=b["name"], vcpus=b["vcpus"], ram=b["ram"], disk=b["disk"]) for b in bodies
        }
        self._flavors_loaded = time.monotonic()
        return bodies

    def list_keys(self) -> List[Dict]:
        return [views.keypair(body) for body in self._nova_pages("list key pairs", "/os-keypairs", "keypairs")]

    def list_networks(self) -> List[Dict]:
        subnets = {s["id"]: s for s in self._neutron_pages("list subnets", "subnets", "subnets")}
        return [views.network(body, subnets) for body in self._neutron_pages("list networks", "networks", "networks")]

    def list_security_groups(self) -> List[Dict]:
        """The project's own groups (what Nova accepts by name), not every group an admin could see."""
        project_id = self._call("authenticate", self._session.get_project_id)
        pages = self._neutron_pages("list security groups", "security-groups", "security_groups",
                                    project_id=project_id)
        return [views.security_group(body) for body in pages]

    def list_zones(self) -> List[str]:
        _, body = self._call("list availability zones", lambda: self._nova.client.get("/os-availability-zone"))
        return views.zones(body)

    def limits(self) -> Dict[str, Dict[str, Optional[int]]]:
        _, body = self._call("read the project's limits", lambda: self._nova.client.get("/limits"))
        return views.limits(body)

    def create_server(
        self, name: str, flavor: Flavor, image_id: str, key_name: Optional[str], user_data: Optional[bytes],
        options: CreateOptions = CreateOptions(),
    ) -> Server:
        where = f"cloud manager '{self.config.name}'"
        if options.tags and _version(self.config.compute_api_version) < TAGS_AT_CREATE:
            raise BadRequest(f"{where}: 'tags' at create need compute_api_version 2.52 or later "
                             f"(the section has {self.config.compute_api_version})")
        nics = self._nics(options.networks, where)
        groups = [_by_name(self._group_names, ref, where) for ref in options.security_groups]
        zone = self._zone_names.find(options.availability_zone, where) if options.availability_zone else None
        group = _by_name(self._server_group_names, options.server_group, where) if options.server_group else None

        def post():
            return self._nova.servers.create(
                name=name,
                image=image_id,
                flavor=flavor.id,
                key_name=key_name,
                userdata=user_data,
                nics=nics,
                security_groups=groups or None,
                availability_zone=zone,
                meta=dict(options.metadata) or None,
                config_drive=options.config_drive or None,
                description=options.description,
                scheduler_hints={"group": group} if group else None,
                tags=list(options.tags) or None,
            )

        # rate-limited: send it again only if no VM of that name was made after all
        created = self._call(f"create VM '{name}'", post, repeat=lambda: next(iter(self.servers_named(name)), None))
        # Nova answers 202 once the instance record exists in BUILD: no need to read it back.
        return Server(id=created.id, name=name, status="BUILD", flavor_name=flavor.name, vcpus=flavor.vcpus)

    def _nics(self, requested: Optional[Tuple[str, ...]], where: str):
        """Nova's ``networks``: 'auto', 'none', or one ``net-id`` per network (names resolved here)."""
        refs = requested if requested is not None else tuple(
            net.strip() for net in self.config.networks.split(",") if net.strip())
        if len(refs) == 1 and refs[0].lower() in ("auto", "none"):
            return refs[0].lower()
        return [{"net-id": _by_name(self._network_names, ref, where)} for ref in refs]

    def _list_server_groups(self) -> List[Tuple[str, str]]:
        _, body = self._call("list server groups", lambda: self._nova.client.get(f"/os-server-groups?limit={PAGE_SIZE}"))
        return [(group["id"], group.get("name", "")) for group in body.get("server_groups") or []]

    def set_state(self, server_id: str, action: ServerAction) -> None:
        run = NOVA_ACTIONS[action]
        self._call(f"{action.value.replace('_', ' ')} VM {server_id}", lambda: run(self._nova.servers, server_id))
        self._consoles.discard(server_id)

    def set_metadata(self, server_id: str, metadata: Mapping[str, str]) -> None:
        self._call(f"set metadata of VM {server_id}", lambda: self._nova.servers.set_meta(server_id, dict(metadata)))

    def delete_metadata(self, server_id: str, keys: List[str]) -> None:
        self._call(f"remove metadata of VM {server_id}", lambda: self._nova.servers.delete_meta(server_id, keys))

    def set_tags(self, server_id: str, tags: List[str]) -> None:
        self._call(f"set the tags of VM {server_id}", lambda: self._nova.servers.set_tags(server_id, tags))

    def rename(self, server_id: str, name: str) -> None:
        self._call(f"rename VM {server_id} to '{name}'", lambda: self._nova.servers.update(server_id, name=name))

    def snapshot(self, server_id: str, image_name: str, properties: Optional[Mapping[str, str]] = None) -> str:
        # microversion >= 2.45 answers the image id; a second createImage would make a second image.
        # Nova passes createImage's ``metadata`` on to Glance as the image's properties.
        return str(self._call(f"snapshot VM {server_id}", lambda: self._nova.servers.create_image(
            server_id, image_name, metadata=dict(properties or {}) or None), repeat=False))

    def image_status(self, image_id: str) -> str:
        try:
            body = self._call(f"read image {image_id}", lambda: self._image.get(f"/v2/images/{image_id}").json())
            return body.get("status", "unknown")
        except NotFound:
            return "deleted"

    def console_log(self, server_id: str, lines: int) -> str:
        return str(self._call(f"read the console log of VM {server_id}",
                              lambda: self._nova.servers.get_console_output(server_id, length=lines)))

    def resize(self, server_id: str, flavor: Flavor) -> None:
        self._call(f"resize VM {server_id} to flavor {flavor.name}",
                   lambda: self._nova.servers.resize(server_id, flavor.id), repeat=False)

    def delete(self, server_id: str) -> None:
        self._call(f"delete VM {server_id}", lambda: self._nova.servers.delete(server_id))
        self._consoles.discard(server_id)

    # -- flavors ------------------------------------------------------------------------

    def find_flavor(self, name_or_id: str) -> Flavor:
        found = self._lookup_flavor(name_or_id, refresh=False) or self._lookup_flavor(name_or_id, refresh=True)
        if found:
            return found
        known = ", ".join(sorted(f"{f.id} ({f.name})" for f in self._flavor_cache(refresh=False).values()))
        raise NotFound(f"cloud manager '{self.config.name}': no flavor '{name_or_id}' (available: {known or 'none'})")

    def flavor_id(self, flavor_name: Optional[str]) -> Optional[str]:
        if not flavor_name:
            return None
        found = self._lookup_flavor(flavor_name, refresh=False)
        if found is None and time.monotonic() - self._flavors_loaded > 60:
            found = self._lookup_flavor(flavor_name, refresh=True)  # a flavor created since the last list
        return found.id if found else None

    def _lookup_flavor(self, name_or_id: str, refresh: bool) -> Optional[Flavor]:
        flavors = self._flavor_cache(refresh)
        return flavors.get(name_or_id) or next((f for f in flavors.values() if f.name == name_or_id), None)

    def _flavor_cache(self, refresh: bool) -> Dict[str, Flavor]:
        with self._lock:  # one listing at a time: concurrent first messages share it
            expired = time.monotonic() - self._flavors_loaded > FLAVOR_CACHE_SECONDS
            if refresh or expired or not self._flavors:
                self._flavor_bodies()
            return self._flavors

    # -- images (Glance, from the catalog) ----------------------------------------------

    def list_images(self) -> List[Dict]:
        images: List[Dict] = []
        path = f"/v2/images?limit={PAGE_SIZE}"
        base = self._call("list images", self._image.get_endpoint).rstrip("/")
        while path:
            page = path
            body = self._call("list images", lambda: self._image.get(page).json())
            images.extend(views.image(base, image) for image in body.get("images", []))
            path = body.get("next")
        return images

    def images_with(self, key: str, value: str) -> List[Image]:
        """One ``GET /v2/images?<key>=<value>&owner=<project>``: Glance matches any filter that is
        not an image attribute against the image's properties, exactly. The owner filter keeps out
        images other projects share or publish with the same property."""
        query = {key: value, "limit": PAGE_SIZE}
        owner = self.project_id()
        if owner:
            query["owner"] = owner
        path = "/v2/images?" + urlencode(query)
        body = self._call(f"look up images by their property {key}",
                          lambda: self._image.get(path).json())
        return [Image(id=image["id"], status=image.get("status"), created=image.get("created_at"))
                for image in body.get("images") or []]

    def delete_image(self, image_id: str) -> None:
        try:
            self._call(f"delete image {image_id}", lambda: self._image.delete(f"/v2/images/{image_id}"))
        except NotFound:
            pass  # already gone

    def find_image(self, name_or_id: str) -> str:
        """An image id; a name is asked of Glance once and remembered for ``NAME_CACHE_SECONDS``."""
        if is_uuid(name_or_id):
            return name_or_id  # Nova validates the id itself: no extra request
        cached = self._image_ids.get(name_or_id)
        if cached:
            return cached
        found = self._call(f"look up image '{name_or_id}'", lambda: self._image.get(
            "/v2/images?" + urlencode({"name": name_or_id})).json()).get("images", [])
        if not found:
            known = ", ".join(sorted(f"{image['id']} ({image.get('name')})" for image in self.list_images()))
            raise NotFound(
                f"cloud manager '{self.config.name}': no image named '{name_or_id}' (available: {known or 'none'})"
            )
        if len(found) > 1:
            ids = ", ".join(image["id"] for image in found)
            raise Conflict(f"cloud manager '{self.config.name}': several images are named '{name_or_id}' ({ids})")
        self._image_ids.put(name_or_id, found[0]["id"])
        return found[0]["id"]

    # -- console ------------------------------------------------------------------------

    def known_console(self, server: Server) -> Console:
        if server.status != RUNNING:
            return Console(reason=f"the VM is {server.status}")
        return self._consoles.get(server.id) or Console(reason=NOT_READ_IN_A_LIST)

    def console(self, server: Server) -> Console:
        known = self.known_console(server)
        if known.url or known.reason != NOT_READ_IN_A_LIST:
            return known
        try:
            body = self._call(f"get the console of VM {server.name}",
                              lambda: self._nova.servers.get_console_url(server.id, "novnc"))
        except (Conflict, BadRequest, NotFound, BackendError) as exc:
            return Console(reason=str(exc))
        url = body["remote_console"]["url"]
        parsed = urlparse(url)
        found = Console(url=url, port=parsed.port or (443 if parsed.scheme == "https" else 80))
        self._consoles.put(server.id, found)
        return found


def _next_marker(links: Optional[List[Dict]]) -> Optional[str]:
    for link in links or []:
        if link.get("rel") == "next":
            return parse_qs(urlparse(link["href"]).query).get("marker", [None])[0]
    return None


def _auth(config: CloudManagerConfig):
    """The Keystone v3 plugin: the section's application credential if it has one, else its password."""
    if config.uses_application_credential:
        return v3.ApplicationCredential(
            auth_url=config.auth_url,
            application_credential_secret=config.application_credential_secret,
            application_credential_id=config.application_credential_id,
            application_credential_name=None if config.application_credential_id else config.application_credential_name,
            username=None if config.application_credential_id else config.username,
            user_domain_name=None if config.application_credential_id else config.user_domain_name,
        )
    return v3.Password(
        auth_url=config.auth_url,
        username=config.username,
        password=config.password,
        project_name=config.project_name,
        user_domain_name=config.user_domain_name,
        project_domain_name=config.project_domain_name,
    )


def _by_name(catalog: Catalog, ref: str, where: str) -> str:
    """An id as is (Nova checks it, no listing), a name through the catalog."""
    return ref if is_uuid(ref) else catalog.find(ref, where)


def _version(microversion: str) -> Tuple[int, int]:
    major, minor = microversion.split(".")
    return int(major), int(minor)


def _next_href(links: Optional[List[Dict]]) -> Optional[str]:
    return next((link["href"] for link in links or [] if link.get("rel") == "next"), None)


def _message(exc: Exception) -> str:
    """The server's own explanation, without request ids or URLs."""
    text = getattr(exc, "message", None) or getattr(exc, "details", None) or str(exc)
    return str(text).split(" (HTTP ")[0].strip()


def _endpoint_of(exc: Exception) -> str:
    match = re.search(r"(https?://[^\s:/]+(?::\d+)?)", str(exc))
    return match.group(1) if match else "unreachable"
