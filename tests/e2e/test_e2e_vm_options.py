"""Issue 12 through RabbitMQ, the agent and the devcloud: discovery reads, VM details, create options,
day-2 actions. Every reply is checked against the cloud itself (novaclient, Neutron, Glance)."""

from unittest.mock import ANY

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from cloudmanagers_plugin.agent.settings import load_settings
from cloudmanagers_plugin.call import RpcClient, build_request
from cloudmanagers_plugin.controller import CREATE_MARK
from tests.support.controller import status_of
from tests.support.e2e import settle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rpc(agent):
    """Send a request with structured attributes (lists, objects) straight to the agent's queue."""
    client = RpcClient(load_settings(agent.agent_config).broker)

    def send(action, cm_id, timeout=120, **attributes):
        timeout += float(attributes.get("wait", 0))
        correlation_id, _ = client.send(build_request(action, cm_id, attributes, agent.uuid), "", agent.uuid, timeout)
        for reply, _arrived in client.replies(correlation_id, timeout):
            return reply
        raise AssertionError(f"no reply to {action} {attributes}")

    yield send
    client.close()


@pytest.fixture(scope="module")
def demo_session(facts):
    return ks_session.Session(auth=v3.Password(auth_url=facts["auth_url"], **facts["credentials"]["demo"]))


def _neutron(demo_session, facts, path):
    return demo_session.get(facts["endpoints"]["network"].rstrip("/") + "/v2.0/" + path).json()


# -- discovery reads -----------------------------------------------------------------------------


def test_listflavors(agent, sections, nova):
    status = status_of(agent.call("read", sections["v3"], listflavors="1"))
    assert set(status) == {"cloudmanagers", "url", "flavors"}
    expected = {f.id: (f.name, f.vcpus, f.ram, f.disk, f.is_public) for f in nova.flavors.list(is_public=None)}
    assert {f["id"]: (f["name"], f["vcpus"], f["ram"], f["disk"], f["public"]) for f in status["flavors"]} == expected


def test_listkeys(agent, sections, nova):
    if not any(k.name == "e2e-key" for k in nova.keypairs.list()):
        nova.keypairs.create("e2e-key")
    keys = status_of(agent.call("read", sections["v3"], listkeys="1"))["keys"]
    expected = {k.name: (k.type, k.fingerprint) for k in nova.keypairs.list()}
    assert {k["name"]: (k["type"], k["fingerprint"]) for k in keys} == expected and "e2e-key" in expected


def test_listnetworks(agent, sections, facts, demo_session):
    networks = status_of(agent.call("read", sections["v3"], listnetworks="1"))["networks"]
    assert {n["name"]: n["subnets"][0]["cidr"] for n in networks} == facts["networks"]
    real = {n["id"]: n for n in _neutron(demo_session, facts, "networks")["networks"]}
    for network in networks:
        assert (network["shared"], network["external"]) == (real[network["id"]]["shared"],
                                                           real[network["id"]]["router:external"])


def test_listsecuritygroups(agent, sections, facts, demo_session):
    groups = status_of(agent.call("read", sections["v3"], listsecuritygroups="1"))["security_groups"]
    project = demo_session.get_project_id()
    real = _neutron(demo_session, facts, f"security-groups?project_id={project}")["security_groups"]
    assert sorted((g["id"], g["name"]) for g in groups) == sorted((g["id"], g["name"]) for g in real)
    assert {g["name"] for g in groups} == set(facts["security_groups"])


def test_listzones_and_limits(agent, sections, nova):
    status = status_of(agent.call("read", sections["legacy"], listzones="1", limits="1"))
    assert status["zones"] == sorted(z.zoneName for z in nova.availability_zones.list(detailed=False)
                                     if z.zoneState["available"])
    absolute = {limit.name: limit.value for limit in nova.limits.get().absolute}
    assert status["limits"]["instances"] == {"used": absolute["totalInstancesUsed"],
                                             "max": absolute["maxTotalInstances"]}
    assert status["limits"]["cores"]["max"] == absolute["maxTotalCores"]
    assert status["limits"]["ram"]["max"] == absolute["maxTotalRAMSize"]


# -- VM details ---------------------------------------------------------------------------------


def test_details_carry_addresses_and_the_rest(agent, sections, facts, nova, vm_name):
    created = status_of(agent.call("create", sections["v3"], name=vm_name, flavor="m1.tiny", image="cirros-fake",
                            wait=90))
    try:
        details = status_of(agent.call("read", sections["v3"], name=vm_name))
        server = nova.servers.get(created["vm_id"])
        assert details["vm_addresses"] == {
            network: [{"address": a["addr"], "version": a["version"], "type": a["OS-EXT-IPS:type"],
                       "mac": a["OS-EXT-IPS-MAC:mac_addr"]} for a in entries]
            for network, entries in server.addresses.items()}
        assert list(details["vm_addresses"]) == ["private"]
        assert details["vm_addresses"]["private"][0]["address"].startswith("10.0.0.")
        assert details["vm_image"] == facts["image_id"]
        assert details["vm_availability_zone"] == getattr(server, "OS-EXT-AZ:availability_zone") == "nova"
        # the only metadata: the create's own record (its correlation id)
        assert (details["vm_metadata"], details["vm_tags"], details["vm_key_name"]) == ({CREATE_MARK: ANY}, [], None)
        assert details["vm_created"] == server.created and details["vm_updated"]
    finally:
        agent.call("delete", sections["v3"], name=created["vm_id"], force=True, wait=60)
    assert settle(nova, created["vm_id"], "DELETED")[0] == "DELETED"


# -- create options ------------------------------------------------------------------------------


def test_create_with_two_networks_a_group_metadata_and_tags(rpc, sections, facts, nova, vm_name):
    reply = rpc("create", sections["v3"], name=vm_name, flavor="m1.tiny", image="cirros-fake",
                networks=["private", "backend"], security_groups=["web"], metadata={"role": "web"},
                tags=["e2e", "blue"], description="issue 12", config_drive=True, availability_zone="nova", wait=90)
    created = status_of(reply)
    try:
        assert created["vm_status"] == "ACTIVE"
        server = nova.servers.get(created["vm_id"])  # checked independently of the plugin
        assert sorted(server.addresses) == ["backend", "private"]
        assert server.addresses["backend"][0]["addr"].startswith("10.1.0.")
        assert {group["name"] for group in server.security_groups} == {"web"}
        assert server.metadata == {"role": "web", CREATE_MARK: ANY}
        assert sorted(server.tags) == ["blue", "e2e"] and server.description == "issue 12"
        assert getattr(server, "OS-EXT-AZ:availability_zone") == "nova" and server.config_drive in (True, "True")
        details = status_of(rpc("read", sections["v3"], name=vm_name))
        assert sorted(details["vm_addresses"]) == ["backend", "private"]
        assert sorted(details["vm_tags"]) == ["blue", "e2e"]
        assert details["vm_metadata"] == {"role": "web", CREATE_MARK: ANY}
    finally:
        rpc("delete", sections["v3"], name=created["vm_id"], force=True, wait=60)


def test_unknown_network_lists_what_exists_and_creates_nothing(rpc, sections, nova, vm_name):
    error = rpc("create", sections["v3"], name=vm_name, flavor="1", image="cirros-fake",
                networks=["private", "nowhere"])["error"]
    assert "no network 'nowhere' (available: backend, private)" in error
    error = rpc("create", sections["v3"], name=vm_name, flavor="1", image="cirros-fake",
                security_groups=["nosuch"])["error"]
    assert "no security group 'nosuch' (available: default, web)" in error
    assert not [s for s in nova.servers.list() if s.name == vm_name]


# -- day-2 actions -------------------------------------------------------------------------------


@pytest.fixture
def day2_vm(rpc, sections, nova, vm_name):
    created = status_of(rpc("create", sections["v3"], name=vm_name, flavor="m1.tiny", image="cirros-fake", wait=90))
    yield created["vm_id"]
    rpc("delete", sections["v3"], name=created["vm_id"], force=True, wait=60)


def test_shelve_and_unshelve(rpc, sections, nova, day2_vm):
    status = status_of(rpc("update", sections["v3"], name=day2_vm, status="shelve", wait=90))
    assert status["vm_actions"] == ["shelve"] and status["vm_status"] in ("SHELVED", "SHELVED_OFFLOADED")
    assert settle(nova, day2_vm)[0] in ("SHELVED", "SHELVED_OFFLOADED")
    assert status_of(rpc("update", sections["v3"], name=day2_vm, status="SHELVED"))["vm_actions"] == []
    status = status_of(rpc("update", sections["v3"], name=day2_vm, status="ACTIVE", wait=90))
    assert status["vm_actions"] == ["unshelve"] and status["vm_status"] == "ACTIVE"
    assert settle(nova, day2_vm, "ACTIVE")[0] == "ACTIVE"


def test_snapshot_with_wait(rpc, sections, demo_session, facts, day2_vm, vm_name):
    status = status_of(rpc("update", sections["v3"], name=day2_vm, snapshot=f"{vm_name}-snap", wait=90))
    try:
        assert status["vm_actions"] == ["snapshot"] and status["image_status"] == "active"
        image = demo_session.get(f"{facts['endpoints']['image'].rstrip('/')}/v2/images/{status['image_id']}").json()
        assert (image["name"], image["status"]) == (f"{vm_name}-snap", "active")  # Glance itself
    finally:
        demo_session.delete(f"{facts['endpoints']['image'].rstrip('/')}/v2/images/{status['image_id']}")


def test_metadata_tags_and_rename(rpc, sections, nova, day2_vm, vm_name):
    status = status_of(rpc("update", sections["v3"], name=day2_vm, metadata={"role": "db", "tier": "2"}, tags=["x", "y"]))
    assert status["vm_actions"] == ["set_metadata", "set_tags"]
    status = status_of(rpc("update", sections["v3"], name=day2_vm, metadata={"tier": None}, tags=["z"],
                    rename=f"{vm_name}-renamed"))
    assert status["vm_actions"] == ["delete_metadata", "set_tags", "rename"]
    server = nova.servers.get(day2_vm)
    assert (server.metadata, server.tags, server.name) == ({"role": "db", CREATE_MARK: ANY}, ["z"],
                                                           f"{vm_name}-renamed")
    other = status_of(rpc("create", sections["v3"], name=f"{vm_name}-other", flavor="1", image="cirros-fake"))
    try:
        error = rpc("update", sections["v3"], name=day2_vm, rename=f"{vm_name}-other")["error"]
        assert f"a VM named '{vm_name}-other' already exists" in error
        assert nova.servers.get(day2_vm).name == f"{vm_name}-renamed"
    finally:
        rpc("delete", sections["v3"], name=other["vm_id"], force=True, wait=60)


def test_console_log(rpc, sections, nova, day2_vm):
    status = status_of(rpc("read", sections["v3"], name=day2_vm, consolelog=2))
    assert status["vm_console_log"] == nova.servers.get_console_output(day2_vm, length=2)
    assert status["vm_console_log"].splitlines() == ["ANOTHER", "LAST LINE"]  # Nova's fake driver's output


def test_create_in_a_server_group_by_name(rpc, sections, nova, vm_name):
    group = nova.server_groups.create(name=f"{vm_name}-group", policies=["affinity"])
    try:
        created = status_of(rpc("create", sections["v3"], name=vm_name, flavor="1", image="cirros-fake",
                         server_group=f"{vm_name}-group", wait=90))
        try:
            assert nova.server_groups.get(group.id).members == [created["vm_id"]]
        finally:
            rpc("delete", sections["v3"], name=created["vm_id"], force=True, wait=60)
        error = rpc("create", sections["v3"], name=vm_name, flavor="1", image="cirros-fake",
                    server_group="no-such-group")["error"]
        assert "no server group 'no-such-group' (available: " in error and f"{vm_name}-group" in error
    finally:
        nova.server_groups.delete(group.id)
