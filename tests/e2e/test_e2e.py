"""Through RabbitMQ, the agent and the real Keystone/Nova/Glance: every reply checked against Nova itself."""

import concurrent.futures
import subprocess
import sys

import pytest
from novaclient import exceptions as nova_exc

from tests.support.controller import status_of
from tests.support.e2e import harness, settle
from tests.support.seed_examples import assert_seed_reply, example

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def seed_key(nova):
    """The documentation's keypair name, so its create example runs unchanged."""
    try:
        nova.keypairs.get("tim-os")
    except nova_exc.NotFound:
        nova.keypairs.create("tim-os")
    return "tim-os"


@pytest.mark.parametrize("flavour", ["legacy", "v3"])
def test_every_seed_example(agent, nova, facts, sections, seed_key, vm_name, flavour):
    """The documented messages, in the documented order, on both config spellings."""
    cm = sections[flavour]
    send = lambda which, **over: agent.call(**_as_call(example(which, cm, **over)))  # noqa: E731

    listed = send("list cloud managers")
    assert_seed_reply("list cloud managers", listed, cm)
    assert {sections["legacy"], sections["v3"]} <= set(listed["status"]["cloudmanagers"])

    created = send("create", name=vm_name, image=facts["image_id"])
    assert_seed_reply("create", created, cm)
    server_id = created["status"]["vm_id"]
    assert settle(nova, server_id, "ACTIVE") == ("ACTIVE", "m1.tiny")
    assert nova.servers.get(server_id).key_name == seed_key

    vms = send("list VMs")
    assert_seed_reply("list VMs", vms, cm)
    assert vm_name in vms["status"]["VMs"] and vms["status"]["url"] == "http://127.0.0.1"

    details = send("VM details", name=vm_name)
    assert_seed_reply("VM details", details, cm)
    status = details["status"]
    assert (status["vm_status"], status["vm_vcpus"], status["vm_flavor"]) == ("ACTIVE", 1, "1")
    assert status["vm_vnc_port"] == "6080" and status["vm_console_url"].startswith("http://127.0.0.1:6080/")

    images = send("list images")
    assert_seed_reply("list images", images, cm)
    assert facts["image_id"] in {image["id"] for image in images["status"]["images"]}

    assert_seed_reply("shutdown", send("shutdown", name=vm_name), cm)
    assert settle(nova, server_id, "SHUTOFF") == ("SHUTOFF", "m1.tiny")
    stopped = status_of(send("VM details", name=vm_name))   # no console: an empty port, the reason apart
    assert (stopped["vm_vnc_port"], stopped["vm_console_url"]) == ("", None)
    assert stopped["vm_console_unavailable"] == "the VM is SHUTOFF"

    resized = send("resize", name=vm_name)
    assert_seed_reply("resize", resized, cm)
    assert resized["status"]["vm_flavor"] == "2"
    assert settle(nova, server_id, "VERIFY_RESIZE") == ("VERIFY_RESIZE", "m1.small")
    assert status_of(send("resize", name=vm_name))["vm_actions"] == ["confirm_resize"]  # the same message again
    assert settle(nova, server_id, "SHUTOFF") == ("SHUTOFF", "m1.small")

    assert_seed_reply("delete", send("delete", name=vm_name), cm)
    assert settle(nova, server_id, "DELETED")[0] == "DELETED"


def _as_call(message):
    return {"action": message["action"], "cm_id": message["id"], **message["attributes"]}


# -- the transition table, row by row ------------------------------------------------------------

ROWS = [
    ("PAUSED", "ACTIVE", "unpause"), ("SUSPENDED", "ACTIVE", "resume"), ("SHUTOFF", "ACTIVE", "start"),
    ("VERIFY_RESIZE", "ACTIVE", "confirm_resize"), ("ACTIVE", "PAUSED", "pause"),
    ("ACTIVE", "SUSPENDED", "suspend"), ("ACTIVE", "SHUTOFF", "stop"), ("ERROR", "SHUTOFF", "stop"),
    ("ACTIVE", "REBOOT", "reboot_soft"), ("ACTIVE", "HARD_REBOOT", "reboot_hard"),
    ("PAUSED", "HARD_REBOOT", "reboot_hard"), ("SUSPENDED", "HARD_REBOOT", "reboot_hard"),
    ("SHUTOFF", "HARD_REBOOT", "reboot_hard"), ("ERROR", "HARD_REBOOT", "reboot_hard"),
    ("ACTIVE", "ACTIVE", None), ("SHUTOFF", "shutdown", None), ("PAUSED", "paused", None),
]
FINAL = {"REBOOT": "ACTIVE", "HARD_REBOOT": "ACTIVE", "shutdown": "SHUTOFF", "paused": "PAUSED"}


@pytest.fixture(scope="module")
def table_vm(agent, nova, facts, sections):
    reply = agent.call("create", sections["v3"], name="e2e-table", flavor="m1.tiny", image="cirros-fake", wait=90)
    server_id = status_of(reply)["vm_id"]
    yield server_id
    agent.call("delete", sections["v3"], name=server_id, force=True, wait=60)


def _put_in(nova, admin_nova, server_id, wanted):
    """Bring the server to ``wanted`` with direct Nova calls (not through the plugin)."""
    undo = {"PAUSED": nova.servers.unpause, "SUSPENDED": nova.servers.resume, "SHUTOFF": nova.servers.start,
            "VERIFY_RESIZE": nova.servers.confirm_resize,
            "ERROR": lambda sid: admin_nova.servers.reset_state(sid, "active")}
    status, flavor = settle(nova, server_id)
    if status != "ACTIVE":
        undo[status](server_id)
        status, flavor = settle(nova, server_id, "ACTIVE")
    do = {"PAUSED": nova.servers.pause, "SUSPENDED": nova.servers.suspend, "SHUTOFF": nova.servers.stop,
          "VERIFY_RESIZE": lambda sid: nova.servers.resize(sid, "2" if flavor == "m1.tiny" else "1"),
          "ERROR": lambda sid: admin_nova.servers.reset_state(sid, "error")}
    if wanted != "ACTIVE":
        do[wanted](server_id)
    assert settle(nova, server_id, wanted)[0] == wanted


@pytest.mark.parametrize("source,requested,action", ROWS)
def test_transition_row(agent, nova, admin_nova, sections, table_vm, source, requested, action):
    _put_in(nova, admin_nova, table_vm, source)
    status = status_of(agent.call("update", sections["v3"], name="e2e-table", status=requested, wait=60))
    final = FINAL.get(requested, requested)
    assert status["vm_actions"] == ([action] if action else [])
    assert status["vm_status"] == final
    assert settle(nova, table_vm, final)[0] == final


def test_impossible_transition_names_both_states(agent, nova, admin_nova, sections, table_vm):
    _put_in(nova, admin_nova, table_vm, "SHUTOFF")
    error = agent.call("update", sections["v3"], name="e2e-table", status="PAUSED")["error"]
    assert "from SHUTOFF to PAUSED" in error
    assert settle(nova, table_vm)[0] == "SHUTOFF"


def test_resize_and_confirm_in_one_message(agent, nova, admin_nova, sections, table_vm):
    _put_in(nova, admin_nova, table_vm, "ACTIVE")
    target = "m1.medium" if settle(nova, table_vm)[1] != "m1.medium" else "m1.small"
    status = status_of(agent.call("update", sections["v3"], name="e2e-table", flavor=target, confirm=True, wait=90))
    assert status["vm_actions"] == ["resize", "confirm_resize"] and status["vm_status"] == "ACTIVE"
    assert settle(nova, table_vm, "ACTIVE") == ("ACTIVE", target)


def test_status_verify_resize_is_the_first_resize_step(agent, nova, admin_nova, sections, table_vm):
    _put_in(nova, admin_nova, table_vm, "ACTIVE")
    assert "send 'flavor'" in agent.call("update", sections["v3"], name="e2e-table", status="VERIFY_RESIZE")["error"]
    target = "m1.small" if settle(nova, table_vm)[1] != "m1.small" else "m1.tiny"
    status = status_of(agent.call("update", sections["v3"], name="e2e-table", status="VERIFY_RESIZE", flavor=target,
                           wait=90))
    assert status["vm_actions"] == ["resize"] and status["vm_status"] == "VERIFY_RESIZE"
    assert settle(nova, table_vm, "VERIFY_RESIZE") == ("VERIFY_RESIZE", target)
    again = status_of(agent.call("update", sections["v3"], name="e2e-table", status="VERIFY_RESIZE"))
    assert again["vm_actions"] == [] and again["vm_status"] == "VERIFY_RESIZE"   # already there: no call
    assert settle(nova, table_vm, "VERIFY_RESIZE") == ("VERIFY_RESIZE", target)


def test_seed_delete_of_a_running_vm(agent, nova, facts, sections, vm_name):
    """The documented delete removes an ACTIVE VM; a section with protect_running refuses it."""
    cm = sections["v3"]
    server_id = status_of(agent.call("create", cm, name=vm_name, flavor="1", image=facts["image_id"], wait=90))["vm_id"]
    assert settle(nova, server_id, "ACTIVE")[0] == "ACTIVE"
    assert "protect_running" in agent.call("delete", "devcloud_protected", name=vm_name)["error"]
    assert settle(nova, server_id)[0] == "ACTIVE"
    deleted = agent.call(**_as_call(example("delete", cm, name=vm_name)))
    assert_seed_reply("delete", deleted, cm)
    assert (deleted["status"]["deleted"], deleted["status"]["vm_status"]) == (True, "ACTIVE")
    assert settle(nova, server_id, "DELETED")[0] == "DELETED"


# -- several sections, failures ------------------------------------------------------------------


def test_sections_at_once_and_a_wrong_password(agent, sections):
    ids = [sections["legacy"], sections["v3"], "devcloud_yaml"]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda cm: agent.call("read", cm), ids * 2 + ["wrongpw"]))
    for reply in replies[:-1]:
        assert isinstance(status_of(reply)["VMs"], list)
    error = replies[-1]["error"]
    assert "refused the credentials (401)" in error and "not-the-password" not in error
    assert isinstance(status_of(agent.call("read", sections["legacy"]))["VMs"], list)  # the others keep working


def test_error_server_carries_nova_fault(agent, nova, admin_nova, sections, vm_name):
    try:
        huge = admin_nova.flavors.find(name="e2e.huge")
    except nova_exc.NotFound:
        huge = admin_nova.flavors.create("e2e.huge", ram=512, vcpus=100000, disk=1)
    reply = agent.call("create", sections["v3"], name=vm_name, flavor=huge.id, image="cirros-fake", wait=90)
    assert "went to ERROR" in reply["error"] and "No valid host was found" in reply["error"]
    details = status_of(agent.call("read", sections["v3"], name=vm_name))
    assert details["vm_status"] == "ERROR" and "No valid host" in details["vm_fault"]
    assert status_of(agent.call("delete", sections["v3"], name=vm_name, wait=60))["vm_status"] == "DELETED"


def test_exact_names_duplicates_and_no_second_create(agent, nova, facts, sections, vm_name):
    first = status_of(agent.call("create", sections["v3"], name=vm_name, flavor="1", image=facts["image_id"], wait=90))
    refused = agent.call("create", sections["v3"], name=vm_name, flavor="1", image=facts["image_id"])
    assert "already exists" in refused["error"]
    assert len([s for s in nova.servers.list() if s.name == vm_name]) == 1
    assert "no VM named" in agent.call("read", sections["v3"], name=vm_name[:-1])["error"]  # no prefix match
    twin = nova.servers.create(vm_name, facts["image_id"], "1", nics="auto")
    try:
        error = agent.call("read", sections["v3"], name=vm_name)["error"]
        assert first["vm_id"] in error and twin.id in error
        assert status_of(agent.call("read", sections["v3"], name=twin.id))["vm_id"] == twin.id  # an id is accepted
    finally:
        for server_id in (first["vm_id"], twin.id):
            agent.call("delete", sections["v3"], name=server_id, force=True, wait=60)


def test_keystone_restart_mid_run(agent, sections):
    """Every request during and after a Keystone restart gets a reply; service resumes afterwards."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        restart = pool.submit(subprocess.run, [sys.executable, harness.DEVCLOUD, "restart", "keystone"],
                              capture_output=True, text=True)
        replies = []
        while not restart.done():
            replies.append(agent.call("read", sections["v3"], name="no-such-vm-during-restart"))
        assert restart.result().returncode == 0, restart.result().stdout[-2000:]
    assert replies and all("error" in reply and "status" in reply for reply in replies)  # answered, not lost
    assert isinstance(status_of(agent.call("read", sections["legacy"]))["VMs"], list)
    assert isinstance(status_of(agent.call("read", sections["v3"]))["VMs"], list)
