"""End-to-end fixtures: the real devcloud, a real agent on the real RabbitMQ, and an independent Nova client.

Nothing is skipped: if RabbitMQ, the devcloud or the agent cannot start, the fixtures raise
and every e2e test errors, so CI fails loudly.
"""

import os
import subprocess
import uuid

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from novaclient import client as nova_client

from tests.support.e2e import harness

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def facts():
    harness.devcloud("install", quiet=True)
    harness.devcloud("start", quiet=True)
    return harness.devcloud_facts()


@pytest.fixture(scope="session")
def sections(facts):
    return facts["cloudmanagers_sections"]  # {"legacy": ..., "v3": ...}


@pytest.fixture(scope="session")
def e2e_config(facts, tmp_path_factory):
    """The devcloud's two sections, one from its clouds.yaml, one with a wrong password, and one
    that protects running VMs from delete."""
    with open(facts["cloudmanagers_conf"], encoding="utf-8") as handle:
        text = handle.read()
    demo = facts["credentials"]["demo"]
    text += (f"\n[devcloud_yaml]\ncm_type = openstack\ncloud = devcloud\nclouds_yaml = {facts['clouds_yaml']}\n"
             f"\n[wrongpw]\ncm_type = openstack\nkeystone_base_url = {facts['auth_url']}\n"
             f"project_name = {demo['project_name']}\nusername = {demo['username']}\npassword = not-the-password\n"
             f"\n[devcloud_protected]\ncm_type = openstack\nkeystone_base_url = {facts['auth_url']}\n"
             f"project_name = {demo['project_name']}\nusername = {demo['username']}\npassword = {demo['password']}\n"
             "protect_running = true\n")
    path = tmp_path_factory.mktemp("e2e") / "cloudmanagers.conf"
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="session")
def agent(e2e_config, tmp_path_factory):
    running = harness.Agent(str(tmp_path_factory.mktemp("agent")), e2e_config).start()
    yield running
    running.stop()
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)


def _nova(facts, who):
    creds = facts["credentials"][who]
    auth = v3.Password(auth_url=facts["auth_url"], **creds)
    return nova_client.Client("2.47", session=ks_session.Session(auth=auth, timeout=30))


@pytest.fixture(scope="session")
def nova(facts):
    """Nova as the demo user, read independently of the plugin."""
    return _nova(facts, "demo")


@pytest.fixture(scope="session")
def admin_nova(facts):
    return _nova(facts, "admin")


@pytest.fixture
def vm_name():
    return f"e2e-{uuid.uuid4().hex[:8]}"
