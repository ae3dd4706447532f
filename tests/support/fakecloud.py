"""A small stateful Keystone v3 + Nova + Glance fake on top of requests-mock.

Unit tests and the request-count bench share it: it answers the HTTP calls the OpenStack
driver makes, keeps servers in memory with Nova's state rules (409 on an impossible
action), and records every request so callers can count them per service.
"""

import datetime
import json
import re
import uuid
from typing import Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlparse

import requests_mock

KEYSTONE = "http://127.0.0.1:5000"
NOVA = "http://127.0.0.1:8774/v2.1"
GLANCE = "http://127.0.0.1:9292"
NEUTRON = "http://127.0.0.1:9696"
TOKEN = "gAAAAAB-secret-token-value-0123456789"
PASSWORD = "s3cr3t-Pa55word!"

FLAVORS = [
    {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1},
    {"id": "2", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
    {"id": "3", "name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
]
IMAGE_ID = "25150b69-c221-4972-822e-9ab1a4884957"
NETWORKS = [
    {"id": "5e1f0a7e-0000-4000-8000-000000000001", "name": "private", "subnets": ["5e1f0a7e-0000-4000-8000-00000000000a"],
     "shared": True, "router:external": False},
    {"id": "5e1f0a7e-0000-4000-8000-000000000002", "name": "backend", "subnets": ["5e1f0a7e-0000-4000-8000-00000000000b"],
     "shared": False, "router:external": False},
]
SUBNETS = [
    {"id": "5e1f0a7e-0000-4000-8000-00000000000a", "name": "private-subnet", "cidr": "10.0.0.0/24", "ip_version": 4,
     "network_id": NETWORKS[0]["id"]},
    {"id": "5e1f0a7e-0000-4000-8000-00000000000b", "name": "backend-subnet", "cidr": "10.1.0.0/24", "ip_version": 4,
     "network_id": NETWORKS[1]["id"]},
]
SECURITY_GROUPS = [
    {"id": "6a0c0d7e-0000-4000-8000-000000000001", "name": "default", "description": "Default security group"},
    {"id": "6a0c0d7e-0000-4000-8000-000000000002", "name": "web", "description": "HTTP and SSH"},
]
KEYPAIRS = [{"name": "tim-os", "type": "ssh", "fingerprint": "1e:2c:9b:56:79:4b:45:77:f9:ca:7a:98:2c:b0:d5:3c",
             "public_key": "ssh-rsa AAAA..."}]

# Nova action -> (statuses it is allowed from, status it leaves the server in)
ACTIONS = {
    "pause": (("ACTIVE",), "PAUSED"),
    "unpause": (("PAUSED",), "ACTIVE"),
    "suspend": (("ACTIVE",), "SUSPENDED"),
    "resume": (("SUSPENDED",), "ACTIVE"),
    "os-start": (("SHUTOFF",), "ACTIVE"),
    "os-stop": (("ACTIVE", "ERROR"), "SHUTOFF"),
    "reboot": (("ACTIVE", "PAUSED", "SUSPENDED", "SHUTOFF", "ERROR", "REBOOT"), "ACTIVE"),
    "resize": (("ACTIVE", "SHUTOFF"), "VERIFY_RESIZE"),
    "confirmResize": (("VERIFY_RESIZE",), None),
    "revertResize": (("VERIFY_RESIZE",), None),
    "shelve": (("ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED"), "SHELVED_OFFLOADED"),
    "unshelve": (("SHELVED", "SHELVED_OFFLOADED"), "ACTIVE"),
    "createImage": (("ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED"), None),
    "os-getConsoleOutput": (("ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED", "ERROR"), None),
}
CONSOLE = [f"boot line {n}" for n in range(1, 21)]


def _instant(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _microversion(request) -> tuple:
    major, minor = request.headers.get("X-OpenStack-Nova-API-Version", "2.1").split(".")
    return int(major), int(minor)


class FakeCloud:
    """Install with ``FakeCloud(mocker)``; state lives in ``servers``; counts via ``count()``."""

    def __init__(self, mocker: requests_mock.Mocker, password: str = PASSWORD, console: bool = True,
                 page_size: int = 1000, auto_confirm: bool = False):
        self.mocker = mocker
        self.password = password
        self.console = console
        self.page_size = page_size
        self.auto_confirm = auto_confirm
        self.servers: Dict[str, dict] = {}
        self.deleted: Dict[str, dict] = {}  # what changes-since still shows of a deleted VM
        self.clock = "2026-11-25T12:00:00Z"  # the "updated" time a delete stamps
        self.images = [{"id": IMAGE_ID, "name": "cirros-fake"}]
        self.networks = [dict(n) for n in NETWORKS]
        self.subnets = [dict(s) for s in SUBNETS]
        self.security_groups = [dict(g) for g in SECURITY_GROUPS]
        self.keypairs = [dict(k) for k in KEYPAIRS]
        self.zones = [("nova", True), ("broken", False)]
        self.limits = {"maxTotalInstances": 20, "totalInstancesUsed": 0, "maxTotalCores": -1, "totalCoresUsed": 0,
                       "maxTotalRAMSize": -1, "totalRAMUsed": 0}
        self.tokens_issued = 0
        self.catalog_urls = {"compute": NOVA, "image": GLANCE, "network": NEUTRON}  # what new tokens list
        self.app_credentials: Dict[str, dict] = {}  # id -> {id, name, secret}
        self.next_status: Dict[str, str] = {}  # server name -> status a create ends in
        self.created_bodies: List[dict] = []  # every POST /servers body, as sent
        self.snapshot_status = "active"  # what a new snapshot image shows in Glance
        self.snapshots_made = 0  # images created by createImage, deleted ones included
        self.before_snapshot: Optional[Callable[[], None]] = None  # runs as a createImage arrives (a race)
        self.server_groups = [{"id": "7b0c0d7e-0000-4000-8000-000000000001", "name": "spread",
                               "policies": ["anti-affinity"]}]
        mocker.post(f"{KEYSTONE}/v3/auth/tokens", json=self._token, status_code=201,
                    headers={"X-Subject-Token": TOKEN})
        mocker.get(f"{NOVA}/", json={"version": {"id": "v2.1", "status": "CURRENT", "version": "2.96",
                                                 "min_version": "2.1"}})
        mocker.post(f"{KEYSTONE}/v3/users/u1/application_credentials", json=self._create_app_credential,
                    status_code=201)
        mocker.delete(re.compile(rf"^{re.escape(KEYSTONE)}/v3/users/u1/application_credentials/[^/]+$"),
                      json=self._delete_app_credential)
        mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers(\?.*)?$"), json=self._list)
        mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers/detail(\?.*)?$"), json=self._detail)
        mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers/[^/?]+$"), json=self._show)
        mocker.post(f"{NOVA}/servers", json=self._create)
        mocker.post(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/action$"), json=self._action)
        mocker.post(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/remote-consoles$"), json=self._console)
        mocker.delete(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+$"), json=self._delete)
        mocker.put(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+$"), json=self._update)
        mocker.post(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/metadata$"), json=self._set_metadata)
        mocker.delete(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/metadata/[^/]+$"), json=self._delete_metadata)
        mocker.put(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/tags$"), json=self._set_tags)
        mocker.get(re.compile(rf"^{re.escape(GLANCE)}/v2/images/[^/?]+$"), json=self._image)
        mocker.delete(re.compile(rf"^{re.escape(GLANCE)}/v2/images/[^/?]+$"), json=self._delete_image)
        mocker.get(re.compile(rf"^{re.escape(NOVA)}/flavors/detail(\?.*)?$"), json=self._flavors)
        mocker.get(re.compile(rf"^{re.escape(NOVA)}/os-keypairs(\?.*)?$"), json=self._keypairs)
        mocker.get(re.compile(rf"^{re.escape(NOVA)}/os-server-groups(\?.*)?$"),
                   json=lambda request, context: {"server_groups": self.server_groups})
        mocker.get(f"{NOVA}/os-availability-zone", json=lambda request, context: {"availabilityZoneInfo": [
            {"zoneName": name, "zoneState": {"available": up}, "hosts": None} for name, up in self.zones]})
        mocker.get(f"{NOVA}/limits", json=lambda request, context: {"limits": {"absolute": dict(self.limits),
                                                                               "rate": []}})
        mocker.get(re.compile(rf"^{re.escape(GLANCE)}/v2/images(\?.*)?$"), json=self._images)
        for collection, key in (("networks", "networks"), ("subnets", "subnets"),
                                ("security-groups", "security_groups")):
            mocker.get(re.compile(rf"^{re.escape(NEUTRON)}/v2.0/{collection}(\?.*)?$"),
                       json=lambda request, context, key=key, collection=collection: self._neutron_list(
                           request, collection, key))

    # -- bookkeeping ---------------------------------------------------------------------

    def throttle(self, method: str, pattern: str, handler, times: int = 1, status: int = 429,
                 retry_after: Optional[str] = "1", then_status: int = 200) -> None:
        """Answer ``status`` with ``Retry-After`` to the next ``times`` matching requests, then as ``handler``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        limited = {"status_code": status, "headers": headers,
                   "json": {"overLimit": {"code": status, "message": "This request was rate-limited."}}}
        self.mocker.register_uri(method, re.compile(pattern), [limited] * times
                                 + [{"json": handler, "status_code": then_status}])

    def count(self, service: Optional[str] = None) -> int:
        """Requests seen so far, for one service ('keystone', 'nova', 'glance') or all."""
        ports = {"keystone": 5000, "nova": 8774, "glance": 9292, "neutron": 9696}
        return sum(1 for r in self.mocker.request_history if service is None or r.port == ports[service])

    def requests(self) -> List[str]:
        return [f"{r.method} {r.path}{'?' + r.query if r.query else ''}" for r in self.mocker.request_history]

    def add_app_credential(self, name: str = "cm", secret: str = "app-secret-0123") -> dict:
        credential = {"id": uuid.uuid4().hex, "name": name, "secret": secret}
        self.app_credentials[credential["id"]] = credential
        return credential

    def add_server(self, name: str, status: str = "ACTIVE", flavor: str = "1", **extra) -> dict:
        flavor_row = next(f for f in FLAVORS if f["id"] == flavor)
        server = {
            "id": str(uuid.uuid4()), "name": name, "status": status, "OS-EXT-STS:task_state": None,
            "flavor": {"original_name": flavor_row["name"], "vcpus": flavor_row["vcpus"], "ram": flavor_row["ram"],
                       "disk": flavor_row["disk"]},
            "previous_flavor": None,
            "addresses": {"private": [{"addr": f"10.0.0.{10 + len(self.servers)}", "version": 4,
                                       "OS-EXT-IPS:type": "fixed",
                                       "OS-EXT-IPS-MAC:mac_addr": f"fa:16:3e:00:00:{len(self.servers):02x}"}]},
            "image": {"id": IMAGE_ID, "links": []}, "key_name": None, "OS-EXT-AZ:availability_zone": "nova",
            "metadata": {}, "tags": [], "created": "2026-11-25T10:00:00Z", "updated": "2026-11-25T10:00:05Z",
        }
        server.update(extra)
        self.servers[server["id"]] = server
        return server

    def _error(self, context, code: int, message: str) -> dict:
        context.status_code = code
        names = {400: "badRequest", 401: "unauthorized", 404: "itemNotFound", 409: "conflictingRequest"}
        return {names.get(code, "computeFault"): {"code": code, "message": message}}

    def _authorized(self, request, context) -> bool:
        return request.headers.get("X-Auth-Token") == TOKEN

    # -- keystone ------------------------------------------------------------------------

    def _token(self, request, context):
        identity = json.loads(request.body)["auth"]["identity"]
        if "application_credential" in identity:
            credential = identity["application_credential"]
            known = self.app_credentials.get(credential.get("id")) or next(
                (c for c in self.app_credentials.values() if c["name"] == credential.get("name")), None)
            user = {"name": "demo"}
            refused = known is None or known["secret"] != credential.get("secret")
        else:
            user = identity["password"]["user"]
            refused = user.get("password") != self.password
        if refused:
            context.status_code = 401
            return {"error": {"code": 401, "title": "Unauthorized",
                              "message": "The request you have made requires authentication."}}
        self.tokens_issued += 1
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        names = {"compute": "nova", "image": "glance", "network": "neutron"}
        catalog = [{"type": kind, "name": names[kind], "endpoints": [
            {"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url}]}
            for kind, url in self.catalog_urls.items()]
        return {"token": {
            "methods": ["password"], "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "issued_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "user": {"id": "u1", "name": user["name"], "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "p1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": "r1", "name": "member"}], "catalog": catalog,
        }}

    def _create_app_credential(self, request, context):
        body = json.loads(request.body)["application_credential"]
        credential = self.add_app_credential(body["name"], secret=uuid.uuid4().hex)
        credential.update(unrestricted=body.get("unrestricted"), expires_at=body.get("expires_at"))
        return {"application_credential": dict(credential, roles=[{"id": "r1", "name": "member"}], project_id="p1")}

    def _delete_app_credential(self, request, context):
        if self.app_credentials.pop(urlparse(request.url).path.rsplit("/", 1)[1], None) is None:
            context.status_code = 404
            return {"error": {"code": 404, "title": "Not Found", "message": "Could not find application credential"}}
        context.status_code = 204
        return None

    # -- nova ----------------------------------------------------------------------------

    def _list(self, request, context):
        if not self._authorized(request, context):
            return self._error(context, 401, "auth")
        query = parse_qs(urlparse(request.url).query)
        limit = min(int(query.get("limit", [self.page_size])[0]), self.page_size)
        ordered = list(self.servers.values())
        marker = query.get("marker", [None])[0]
        start = next((i + 1 for i, s in enumerate(ordered) if s["id"] == marker), 0)
        page = ordered[start:start + limit]
        body = {"servers": [{"id": s["id"], "name": s["name"], "links": []} for s in page]}
        if len(page) == limit:
            body["servers_links"] = [{"rel": "next", "href": f"{NOVA}/servers?limit={limit}&marker={page[-1]['id']}"}]
        return body

    def _detail(self, request, context):
        """A name filter (a regex), or pages of every VM; ``changes-since`` adds the deleted VMs, as Nova does."""
        if not self._authorized(request, context):
            return self._error(context, 401, "auth")
        query = parse_qs(urlparse(request.url).query)
        if "name" in query:
            return {"servers": [s for s in self.servers.values() if re.search(query["name"][0], s["name"])]}
        items = list(self.servers.values())
        if "changes-since" in query:
            since = _instant(query["changes-since"][0])
            items = [s for s in items + list(self.deleted.values()) if _instant(s["updated"]) >= since]
        return self._paged(request, items, "servers", f"{NOVA}/servers/detail")

    def _find(self, request) -> Optional[dict]:
        return self.servers.get(urlparse(request.url).path.split("/servers/")[1].split("/")[0])

    def _show(self, request, context):
        server = self._find(request)
        if server is None:
            return self._error(context, 404, "Instance could not be found.")
        return {"server": server}

    def _create(self, request, context):
        whole = json.loads(request.body)
        body = whole["server"]
        self.created_bodies.append(whole)
        if body["flavorRef"] not in {f["id"] for f in FLAVORS}:
            return self._error(context, 400, f"Flavor {body['flavorRef']} could not be found.")
        if body.get("imageRef") not in {i["id"] for i in self.images}:
            return self._error(context, 400, f"Image {body.get('imageRef')} could not be found.")
        if "tags" in body and _microversion(request) < (2, 52):
            return self._error(context, 400, "Invalid input for field/attribute server. "
                                             "Additional properties are not allowed ('tags' was unexpected)")
        status = self.next_status.pop(body["name"], "ACTIVE")
        server = self.add_server(body["name"], status=status, flavor=body["flavorRef"],
                                 user_data=body.get("user_data"), key_name=body.get("key_name"),
                                 networks=body.get("networks"), metadata=body.get("metadata") or {},
                                 tags=body.get("tags") or [],
                                 **{"OS-EXT-AZ:availability_zone": body.get("availability_zone") or "nova"})
        if status == "ERROR":
            server["fault"] = {"code": 500, "message": "No valid host was found. There are not enough hosts available."}
        context.status_code = 202
        return {"server": {"id": server["id"], "links": [], "adminPass": "x"}}

    def _action(self, request, context):
        server = self._find(request)
        if server is None:
            return self._error(context, 404, "Instance could not be found.")
        (name, argument), = json.loads(request.body).items()
        allowed, final = ACTIONS[name]
        if server["status"] not in allowed:
            return self._error(context, 409, f"Cannot '{name}' instance {server['id']} while it is in vm_state "
                                             f"{server['status'].lower()}")
        if name == "resize":
            new = next(f for f in FLAVORS if f["id"] == argument["flavorRef"])
            server["previous"] = (server["flavor"], server["status"])
            server["flavor"] = {"original_name": new["name"], "vcpus": new["vcpus"], "ram": new["ram"], "disk": new["disk"]}
            final = server["status"] if self.auto_confirm else final
        elif name == "confirmResize":
            final = server.pop("previous")[1]
        elif name == "revertResize":
            server["flavor"], final = server.pop("previous")
        elif name == "createImage":
            return self._snapshot(server, argument, context)
        elif name == "os-getConsoleOutput":
            context.status_code = 200
            return {"output": "\n".join(CONSOLE[-int(argument.get("length") or len(CONSOLE)):]) + "\n"}
        server["status"] = final or server["status"]
        context.status_code = 202
        return None

    def _snapshot(self, server: dict, argument: dict, context) -> dict:
        """Nova's createImage: Glance gets an image owned by the project, with ``metadata`` as its
        properties; refused (409) while a task (another snapshot) runs on the VM."""
        if self.before_snapshot:
            self.before_snapshot()
        if server["OS-EXT-STS:task_state"]:
            return self._error(context, 409, f"Cannot 'createImage' instance {server['id']} while it is in "
                                             f"task_state {server['OS-EXT-STS:task_state']}")
        image = self.add_image(argument["name"], status=self.snapshot_status, **argument.get("metadata", {}))
        self.snapshots_made += 1
        context.status_code = 202
        return {"image_id": image["id"]}

    def add_image(self, name: str, status: str = "active", **properties) -> dict:
        """An image of the project, created one second after the one before (Glance's whole seconds)."""
        created = _instant("2026-11-25T12:00:00Z") + datetime.timedelta(seconds=len(self.images))
        image = {"id": str(uuid.uuid4()), "name": name, "status": status, "owner": "p1",
                 "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"), **properties}
        self.images.append(image)
        return image

    def _console(self, request, context):
        server = self._find(request)
        if not self.console:
            return self._error(context, 409, "Unable to get console: VNC is disabled on this cloud")
        return {"remote_console": {"protocol": "vnc", "type": "novnc",
                                   "url": f"http://127.0.0.1:6080/vnc_auto.html?path=%3Ftoken%3D{server['id']}"}}

    def _delete(self, request, context):
        server = self._find(request)
        if server is None:
            return self._error(context, 404, "Instance could not be found.")
        del self.servers[server["id"]]
        self.deleted[server["id"]] = {**server, "status": "DELETED", "updated": self.clock}
        context.status_code = 204
        return None

    def _paged(self, request, items: List[dict], key: str, link_base: str, marker_field: str = "id") -> dict:
        """One page of ``items`` after ``marker`` (Nova and Neutron page the same way), with a next link."""
        query = parse_qs(urlparse(request.url).query)
        limit = min(int(query.get("limit", [self.page_size])[0]), self.page_size)
        marker = query.get("marker", [None])[0]
        start = next((i + 1 for i, item in enumerate(items) if item[marker_field] == marker), 0)
        page = items[start:start + limit]
        body = {key: page}
        if len(page) == limit:
            body[f"{key}_links"] = [{"rel": "next", "href": f"{link_base}?limit={limit}&marker={page[-1][marker_field]}"}]
        return body

    def _flavors(self, request, context):
        return self._paged(request, [dict(f, links=[], **{"os-flavor-access:is_public": f["id"] != "3"})
                                     for f in FLAVORS], "flavors", f"{NOVA}/flavors/detail")

    def _keypairs(self, request, context):
        body = self._paged(request, self.keypairs, "keypairs", f"{NOVA}/os-keypairs", marker_field="name")
        body["keypairs"] = [{"keypair": k} for k in body["keypairs"]]
        return body

    # -- neutron -------------------------------------------------------------------------

    def _neutron_list(self, request, collection: str, key: str) -> dict:
        items = {"networks": self.networks, "subnets": self.subnets, "security-groups": self.security_groups}
        return self._paged(request, items[collection], key, f"{NEUTRON}/v2.0/{collection}")

    def _update(self, request, context):
        server = self._find(request)
        server.update(json.loads(request.body)["server"])
        return {"server": server}

    def _set_metadata(self, request, context):
        server = self._find(request)
        server["metadata"].update(json.loads(request.body)["metadata"])
        return {"metadata": server["metadata"]}

    def _delete_metadata(self, request, context):
        server = self._find(request)
        key = urlparse(request.url).path.rsplit("/", 1)[1]
        if key not in server["metadata"]:
            return self._error(context, 404, "Metadata item was not found")
        del server["metadata"][key]
        context.status_code = 204
        return None

    def _set_tags(self, request, context):
        server = self._find(request)
        server["tags"] = json.loads(request.body)["tags"]
        return {"tags": server["tags"]}

    # -- glance --------------------------------------------------------------------------

    def _image(self, request, context):
        image_id = urlparse(request.url).path.rsplit("/", 1)[1]
        found = next((i for i in self.images if i["id"] == image_id), None)
        if found is None:
            context.status_code = 404
            return {"message": "404 Not Found", "code": "404 Not Found", "title": "Not Found"}
        return dict(found, status=found.get("status", "active"))

    def _images(self, request, context):
        """Glance's list: every filter but paging is an exact match on an attribute or a property."""
        query = parse_qs(urlparse(request.url).query)
        filters = {key: values[0] for key, values in query.items() if key not in ("limit", "marker")}
        images = [i for i in self.images if all(i.get(key) == value for key, value in filters.items())]
        return {"images": images, "first": "/v2/images"}

    def _delete_image(self, request, context):
        image_id = urlparse(request.url).path.rsplit("/", 1)[1]
        if not any(i["id"] == image_id for i in self.images):
            context.status_code = 404
            return {"message": "404 Not Found", "code": "404 Not Found", "title": "Not Found"}
        self.images = [i for i in self.images if i["id"] != image_id]
        context.status_code = 204
        return None
