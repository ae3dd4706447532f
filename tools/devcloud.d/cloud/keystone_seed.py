"""Populate Keystone: service project and users, the demo project/user, roles
and the service catalog. Idempotent: existing objects are kept, catalog URLs
that differ from the current ports are updated.

One process with python-keystoneclient does this in about 2 s; the same with
the ``openstack`` CLI took over a minute (CLI start-up per call).
"""

from keystoneclient.v3 import client as ks_client

from common import log, session

INTERFACES = ("public", "internal", "admin")
SERVICE_USERS = ("nova", "placement", "glance", "neutron")


def _one(items):
    return items[0] if items else None


def _ensure_role(ks, name):
    return _one(ks.roles.list(name=name)) or ks.roles.create(name=name)


def _ensure_project(ks, name, description):
    return (_one(ks.projects.list(name=name, domain="default"))
            or ks.projects.create(name=name, domain="default", description=description))


def _ensure_user(ks, name, password, project):
    user = _one(ks.users.list(name=name, domain="default"))
    if user is None:
        user = ks.users.create(name=name, domain="default", password=password,
                               default_project=project)
    return user


def _grant(ks, role, user, project):
    if not ks.role_assignments.list(user=user, project=project, role=role):
        ks.roles.grant(role, user=user, project=project)


def _ensure_catalog(ks, region, catalog):
    for stype, (sname, url) in sorted(catalog.items()):
        service = _one(ks.services.list(type=stype)) or ks.services.create(
            name=sname, type=stype, description="devcloud %s" % sname)
        for iface in INTERFACES:
            eps = ks.endpoints.list(service=service, interface=iface, region=region)
            for extra in eps[1:]:
                ks.endpoints.delete(extra)
            if not eps:
                ks.endpoints.create(service=service, url=url, interface=iface, region=region)
            elif eps[0].url != url:
                ks.endpoints.update(eps[0], url=url)


def run(params):
    sess = session(params, "admin")
    ks = ks_client.Client(session=sess, endpoint_override=params["auth_url"],
                          region_name=params["region"])
    roles = {n: _ensure_role(ks, n) for n in ("admin", "member", "reader", "service")}
    service_project = _ensure_project(ks, "service", "devcloud service users")
    for name in SERVICE_USERS:
        user = _ensure_user(ks, name, params["service_password"], service_project)
        _grant(ks, roles["admin"], user, service_project)
        _grant(ks, roles["service"], user, service_project)
    demo = params["credentials"]["demo"]
    demo_project = _ensure_project(ks, demo["project_name"], "devcloud demo project")
    demo_user = _ensure_user(ks, demo["username"], demo["password"], demo_project)
    # member is what Nova's policy wants for booting, actions and the remote
    # console of one's own servers; reader is implied but granted explicitly
    for role in ("member", "reader"):
        _grant(ks, roles[role], demo_user, demo_project)
    _ensure_catalog(ks, params["region"], params["catalog"])
    log("keystone seeded: projects service/%s, users %s + %s, catalog %s" % (
        demo["project_name"], ",".join(SERVICE_USERS), demo["username"],
        ",".join(sorted(params["catalog"]))))
    return {"demo_project_id": demo_project.id, "demo_user_id": demo_user.id}
