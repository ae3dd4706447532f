"""Populate Keystone: service project and users, the demo project/user, roles
and the service catalog. Idempotent: existing objects are kept, catalog URLs
that differ from the current ports are updated.

One process with python-keystoneclient does this in about 2 s; the same with
the ``openstack`` CLI took over a minute (CLI start-up per call).
"""

from typing import Any, Dict, List, Optional, Tuple

from keystoneclient.v3 import client as ks_client

from common import Params, log, session

INTERFACES = ("public", "internal", "admin")
SERVICE_USERS = ("nova", "placement", "glance", "neutron")


def _one(items: List[Any]) -> Optional[Any]:
    return items[0] if items else None


def _ensure_role(keystone: ks_client.Client, name: str) -> Any:
    return _one(keystone.roles.list(name=name)) or keystone.roles.create(name=name)


def _ensure_project(keystone: ks_client.Client, name: str, description: str) -> Any:
    return (_one(keystone.projects.list(name=name, domain="default"))
            or keystone.projects.create(name=name, domain="default", description=description))


def _ensure_user(keystone: ks_client.Client, name: str, password: str, project: Any) -> Any:
    user = _one(keystone.users.list(name=name, domain="default"))
    if user is None:
        user = keystone.users.create(name=name, domain="default", password=password,
                                     default_project=project)
    return user


def _grant(keystone: ks_client.Client, role: Any, user: Any, project: Any) -> None:
    if not keystone.role_assignments.list(user=user, project=project, role=role):
        keystone.roles.grant(role, user=user, project=project)


def _ensure_catalog(keystone: ks_client.Client, region: str, catalog: Dict[str, Tuple[str, str]]) -> None:
    """One endpoint per service and interface, at the URL of the current ports."""
    for service_type, (service_name, url) in sorted(catalog.items()):
        service = _one(keystone.services.list(type=service_type)) or keystone.services.create(
            name=service_name, type=service_type, description=f"devcloud {service_name}")
        for interface in INTERFACES:
            endpoints = keystone.endpoints.list(service=service, interface=interface, region=region)
            for extra in endpoints[1:]:
                keystone.endpoints.delete(extra)
            if not endpoints:
                keystone.endpoints.create(service=service, url=url, interface=interface, region=region)
            elif endpoints[0].url != url:
                keystone.endpoints.update(endpoints[0], url=url)


def run(params: Params) -> Dict[str, str]:
    """Seed everything; returns the demo project's and user's ids."""
    keystone = ks_client.Client(session=session(params, "admin"), endpoint_override=params["auth_url"],
                                region_name=params["region"])
    roles = {name: _ensure_role(keystone, name) for name in ("admin", "member", "reader", "service")}
    service_project = _ensure_project(keystone, "service", "devcloud service users")
    for name in SERVICE_USERS:
        user = _ensure_user(keystone, name, params["service_password"], service_project)
        _grant(keystone, roles["admin"], user, service_project)
        _grant(keystone, roles["service"], user, service_project)
    demo = params["credentials"]["demo"]
    demo_project = _ensure_project(keystone, demo["project_name"], "devcloud demo project")
    demo_user = _ensure_user(keystone, demo["username"], demo["password"], demo_project)
    # member is what Nova's policy wants for booting, actions and the remote
    # console of one's own servers; reader is implied but granted explicitly
    for role in ("member", "reader"):
        _grant(keystone, roles[role], demo_user, demo_project)
    _ensure_catalog(keystone, params["region"], params["catalog"])
    log(f"keystone seeded: projects service/{demo['project_name']}, users {','.join(SERVICE_USERS)} + "
        f"{demo['username']}, catalog {','.join(sorted(params['catalog']))}")
    return {"demo_project_id": demo_project.id, "demo_user_id": demo_user.id}
