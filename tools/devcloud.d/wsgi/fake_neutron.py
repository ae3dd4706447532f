"""A small in-memory stand-in for the Neutron API (``/v2.0``), as a WSGI app.

Why: real Neutron needs an L2 agent (OVS/OVN) to bind ports; without one
ports end up ``binding_failed`` and Nova refuses to spawn. This project never
manages networks, but Nova calls Neutron on boot, delete, stop/start, reboot
and resize, so something has to answer those calls. This answers exactly the
calls Nova and the plugin make: a shared network ``private`` (10.0.0.0/24) and a
second one ``backend`` (10.1.0.0/24), each with its subnet; ports with fixed IPs
from their network's subnet (so servers get addresses); a ``default`` and a
``web`` security group per project; lists paged with ``limit``/``marker`` and
``<collection>_links``; errors as ``{"NeutronError": {type, message, detail}}``
(field names as in the Neutron API reference); empty or unlimited answers for
floating IPs, quotas and the rest.

It advertises no extensions, so Nova takes its legacy port-binding path on
resize. State lives in memory: run it as exactly one worker. Set
``FAKE_NEUTRON_NO_NETWORKS=1`` to expose no network (servers boot without NICs).
No authentication is checked; it only listens on 127.0.0.1.
"""

import ipaddress
import json
import os
import threading
import uuid
from urllib.parse import parse_qs

OWNER = "devcloud"  # tenant of the seeded networks
NET_ID = "5e1f0a7e-0000-4000-8000-000000000001"
SUBNET_ID = "5e1f0a7e-0000-4000-8000-000000000002"
BACKEND_NET_ID = "5e1f0a7e-0000-4000-8000-000000000003"
BACKEND_SUBNET_ID = "5e1f0a7e-0000-4000-8000-000000000004"
FIRST_HOST = 10  # x.y.z.10 is the first address handed out on each subnet
# The seeded networks: (network id, name, shared, subnet id, subnet name, CIDR). ``private`` is
# shared, so Nova's ``networks: auto`` (own non-shared networks + shared ones) finds exactly one
# network; ``backend`` belongs to the devcloud's own tenant and is not shared, so only a boot that
# names it uses it. The stand-in does not filter what a user may see: a plain list shows both.
SEEDED = (
    (NET_ID, "private", True, SUBNET_ID, "private-subnet", "10.0.0.0/24"),
    (BACKEND_NET_ID, "backend", False, BACKEND_SUBNET_ID, "backend-subnet", "10.1.0.0/24"),
)
# Security groups every project gets on first sight, besides ``default``: (name, description).
SEEDED_GROUPS = (("web", "devcloud: HTTP and SSH"),)

_lock = threading.Lock()
_ports = {}
_security_groups = {}
_used_ips = set()  # (subnet id, address)


def _network(net_id, name, shared, subnet_id):
    return {
        "id": net_id, "name": name, "tenant_id": OWNER, "project_id": OWNER,
        "status": "ACTIVE", "admin_state_up": True, "shared": shared, "subnets": [subnet_id],
        "router:external": False, "port_security_enabled": True, "mtu": 1450,
        "provider:network_type": "vxlan", "provider:physical_network": None,
        "provider:segmentation_id": 1, "availability_zones": ["nova"], "tags": [],
        "description": "",
    }


def _subnet(net_id, subnet_id, name, cidr):
    net = ipaddress.ip_network(cidr)
    hosts = list(net.hosts())
    return {
        "id": subnet_id, "name": name, "network_id": net_id, "tenant_id": OWNER,
        "project_id": OWNER, "ip_version": 4, "cidr": cidr, "gateway_ip": str(hosts[0]),
        "enable_dhcp": True, "dns_nameservers": [], "host_routes": [],
        "allocation_pools": [{"start": str(hosts[FIRST_HOST - 1]), "end": str(hosts[-1])}],
        "ipv6_ra_mode": None, "ipv6_address_mode": None, "subnetpool_id": None, "tags": [],
        "description": "",
    }


def _no_networks():
    return os.environ.get("FAKE_NEUTRON_NO_NETWORKS") == "1"


def _networks():
    return [] if _no_networks() else [_network(n, name, shared, s) for n, name, shared, s, _, _ in SEEDED]


def _subnets():
    return [] if _no_networks() else [_subnet(n, s, name, cidr) for n, _, _, s, name, cidr in SEEDED]


def _security_group(project, name, description):
    sg = {"id": str(uuid.uuid4()), "name": name, "tenant_id": project,
          "project_id": project, "description": description, "shared": False,
          "stateful": True, "security_group_rules": [], "tags": []}
    _security_groups[sg["id"]] = sg
    return sg


def _default_sg(project):
    """The 'default' security group of a project; on first sight the seeded groups are created too."""
    for sg in _security_groups.values():
        if sg["tenant_id"] == project and sg["name"] == "default":
            return sg
    for name, description in SEEDED_GROUPS:
        _security_group(project, name, description)
    return _security_group(project, "default", "Default security group")


def _allocate_ip(subnet, wanted=None):
    if wanted:
        _used_ips.add((subnet["id"], wanted))
        return wanted
    for n, host in enumerate(ipaddress.ip_network(subnet["cidr"]).hosts()):
        addr = str(host)
        if n + 1 >= FIRST_HOST and (subnet["id"], addr) not in _used_ips:
            _used_ips.add((subnet["id"], addr))
            return addr
    raise _Error(409, "IpAddressGenerationFailure",
                 "No more IP addresses available on network %s." % subnet["network_id"])


def _mac():
    b = uuid.uuid4().bytes
    return "fa:16:3e:%02x:%02x:%02x" % (b[0], b[1], b[2])


def _create_port(body):
    subnets = [s for s in _subnets() if s["network_id"] == body.get("network_id")]
    if not subnets:
        raise _Error(404, "NetworkNotFound", "Network %s could not be found." % body.get("network_id"))
    project = body.get("tenant_id") or body.get("project_id") or ""
    fixed = []
    for req in body.get("fixed_ips") or [{}]:
        subnet = next((s for s in subnets if s["id"] == req.get("subnet_id")), subnets[0])
        fixed.append({"subnet_id": subnet["id"], "ip_address": _allocate_ip(subnet, req.get("ip_address"))})
    sgs = body.get("security_groups")
    if sgs is None:
        sgs = [_default_sg(project)["id"]] if project else []
    port = {
        "id": str(uuid.uuid4()), "name": body.get("name", ""), "network_id": body["network_id"],
        "tenant_id": project, "project_id": project, "mac_address": body.get("mac_address") or _mac(),
        "fixed_ips": fixed, "device_id": body.get("device_id", ""),
        "device_owner": body.get("device_owner", ""), "status": "ACTIVE",
        "admin_state_up": body.get("admin_state_up", True), "security_groups": sgs,
        "binding:host_id": body.get("binding:host_id") or "", "binding:vif_type": "ovs",
        "binding:vif_details": {"port_filter": True, "connectivity": "l2"},
        "binding:vnic_type": body.get("binding:vnic_type", "normal"),
        "binding:profile": body.get("binding:profile") or {},
        "port_security_enabled": True, "allowed_address_pairs": [], "extra_dhcp_opts": [],
        "dns_name": body.get("dns_name", ""), "dns_assignment": [], "tags": [],
        "description": body.get("description", ""), "resource_request": None,
        "qos_policy_id": None, "qos_network_policy_id": None,
    }
    _ports[port["id"]] = port
    return port


def _update_port(port, body):
    body = dict(body)
    body.pop("binding:vif_type", None)  # Nova may send it; it is read-only here
    if "binding:host_id" in body and body["binding:host_id"] is None:
        body["binding:host_id"] = ""
    if "binding:profile" in body and body["binding:profile"] is None:
        body["binding:profile"] = {}
    port.update(body)
    return port


def _delete_port(port_id):
    port = _ports.pop(port_id, None)
    if port is None:
        raise _Error(404, "PortNotFound", "Port %s could not be found." % port_id)
    for ip in port["fixed_ips"]:
        _used_ips.discard((ip["subnet_id"], ip["ip_address"]))


class _Error(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


_IGNORED_FILTERS = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}


def _matches(item, query):
    for key, wanted in query.items():
        if key in _IGNORED_FILTERS:
            continue
        have = item.get(key)
        if isinstance(have, bool):
            have = "true" if have else "false"
            wanted = [w.lower() for w in wanted]
        elif isinstance(have, list):
            if key == "fixed_ips":  # fixed_ips=ip_address=... / subnet_id=...
                pairs = ["%s=%s" % (k, v) for ip in have for k, v in ip.items()]
                if not any(w in pairs for w in wanted):
                    return False
                continue
            if not any(str(v) in wanted for v in have):
                return False
            continue
        have = "" if have is None else str(have)
        if have not in wanted:
            return False
    return True


def _filter(items, query):
    return [i for i in items if _matches(i, query)]


def _listing(items, query, key, base, collection):
    """A filtered list, paged as Neutron pages: ``limit`` and ``marker`` (an id), and a
    ``<key>_links`` next link while a page is full."""
    items = _filter(items, query)
    try:
        limit = int(query.get("limit", ["0"])[0])
    except ValueError:
        raise _Error(400, "BadRequest", "Bad limit request: limit must be an integer.")
    if limit <= 0:
        return {key: items}
    marker = query.get("marker", [None])[0]
    start = next((n + 1 for n, item in enumerate(items) if item["id"] == marker), 0)
    page = items[start:start + limit]
    body = {key: page}
    if len(page) == limit:
        body[key + "_links"] = [{"rel": "next", "href": "%s/v2.0/%s?limit=%d&marker=%s" % (
            base, collection, limit, page[-1]["id"])}]
    return body


def _versions(base):
    return {"versions": [{"id": "v2.0", "status": "CURRENT",
                          "links": [{"href": base + "/v2.0/", "rel": "self"}]}]}


_EMPTY_COLLECTIONS = {
    "floatingips": "floatingips", "segments": "segments", "trunks": "trunks",
    "routers": "routers", "security-group-rules": "security_group_rules",
    "network-ip-availabilities": "network_ip_availabilities", "qos/policies": "policies",
    "qos/rule-types": "rule_types", "subnetpools": "subnetpools", "address-scopes": "address_scopes",
    "availability_zones": "availability_zones", "agents": "agents", "port_forwardings": "port_forwardings",
}


def _unlimited_quota(project):
    keys = ("network", "subnet", "port", "router", "floatingip", "security_group",
            "security_group_rule", "rbac_policy", "subnetpool")
    quota = {k: -1 for k in keys}
    quota["tenant_id"] = quota["project_id"] = project
    return quota


def _route(method, parts, query, body, base):
    """Dispatch one request; parts is the path after /v2.0 split on '/'."""
    if not parts or parts == [""]:
        return 200, {"resources": [{"name": n, "collection": n} for n in
                                   ("network", "subnet", "port")]}
    res, rest = parts[0], parts[1:]
    if res.endswith(".json"):
        res = res[:-5]
    if res == "extensions":
        return (200, {"extensions": []}) if not rest else (404, None)
    if res == "networks":
        if not rest:
            return 200, _listing(_networks(), query, "networks", base, "networks")
        nets = [n for n in _networks() if n["id"] == rest[0]]
        if not nets:
            raise _Error(404, "NetworkNotFound", "Network %s could not be found." % rest[0])
        return 200, {"network": nets[0]}
    if res == "subnets":
        if not rest:
            return 200, _listing(_subnets(), query, "subnets", base, "subnets")
        subs = [s for s in _subnets() if s["id"] == rest[0]]
        if not subs:
            raise _Error(404, "SubnetNotFound", "Subnet %s could not be found." % rest[0])
        return 200, {"subnet": subs[0]}
    if res == "ports":
        if not rest:
            if method == "GET":
                return 200, {"ports": _filter(list(_ports.values()), query)}
            if method == "POST":
                if "ports" in body:
                    return 201, {"ports": [_create_port(p) for p in body["ports"]]}
                return 201, {"port": _create_port(body.get("port", {}))}
        else:
            port = _ports.get(rest[0])
            if method == "DELETE":
                _delete_port(rest[0])
                return 204, None
            if port is None:
                raise _Error(404, "PortNotFound", "Port %s could not be found." % rest[0])
            if method == "GET":
                return 200, {"port": port}
            if method == "PUT":
                return 200, {"port": _update_port(port, body.get("port", {}))}
        raise _Error(405, "HTTPMethodNotAllowed", "Method not allowed")
    if res == "security-groups":
        for project in query.get("tenant_id", []) + query.get("project_id", []):
            _default_sg(project)
        if not rest:
            if method == "POST":
                sg = dict(body.get("security_group", {}))
                sg.setdefault("tenant_id", sg.get("project_id", ""))
                sg.update({"id": str(uuid.uuid4()), "security_group_rules": [], "shared": False,
                           "project_id": sg["tenant_id"], "stateful": True, "tags": []})
                _security_groups[sg["id"]] = sg
                return 201, {"security_group": sg}
            return 200, _listing(list(_security_groups.values()), query, "security_groups", base,
                                 "security-groups")
        sg = _security_groups.get(rest[0])
        if sg is None:
            raise _Error(404, "SecurityGroupNotFound",
                         "Security group %s does not exist" % rest[0])
        if method == "DELETE":
            del _security_groups[rest[0]]
            return 204, None
        return 200, {"security_group": sg}
    if res == "quotas":
        if not rest:
            return 200, {"quotas": []}
        return 200, {"quota": _unlimited_quota(rest[0])}
    if res == "auto-allocated-topology" and rest:
        if "dry-run" in query.get("fields", []):
            return 200, {"auto_allocated_topology": {"dry-run": "pass"}}
        if not _networks():
            raise _Error(404, "AutoAllocationFailure", "No shared network to auto-allocate")
        return 200, {"auto_allocated_topology": {"id": NET_ID, "tenant_id": rest[0],
                                                  "project_id": rest[0]}}
    key = "/".join([res] + rest[:1]) if res == "qos" else res
    if key in _EMPTY_COLLECTIONS:
        if method == "GET" and (not rest or res == "qos"):
            return 200, {_EMPTY_COLLECTIONS[key]: []}
        raise _Error(404, "HTTPNotFound", "%s %s not found" % (res, "/".join(rest)))
    raise _Error(404, "HTTPNotFound", "The resource could not be found.")


def application(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    base = "http://%s" % environ.get("HTTP_HOST", "127.0.0.1:9696")
    body = {}
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length:
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except ValueError:
            body = {}
    segments = [p for p in path.split("/") if p]
    try:
        if not segments:
            status, payload = 200, _versions(base)
        elif segments[0] != "v2.0":
            raise _Error(404, "HTTPNotFound", "The resource could not be found.")
        else:
            with _lock:
                status, payload = _route(method, segments[1:], query, body, base)
    except _Error as e:
        status, payload = e.status, {"NeutronError": {"type": e.kind, "message": e.message,
                                                      "detail": ""}}
    if payload is None and status != 204:
        status, payload = 404, {"NeutronError": {"type": "HTTPNotFound",
                                                 "message": "not found", "detail": ""}}
    reasons = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
               405: "Method Not Allowed", 409: "Conflict"}
    data = b"" if status == 204 else json.dumps(payload).encode()
    headers = [("Content-Length", str(len(data)))]
    if data:
        headers.append(("Content-Type", "application/json"))
    start_response("%d %s" % (status, reasons.get(status, "Error")), headers)
    return [data]
