"""Keystone application credentials on the devcloud: `cloudmanagers credentials create`, then a
rotation while an agent serves a stream of reads through RabbitMQ: no request may fail."""

import os
import subprocess
import threading

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client as ks_client

from cloudmanagers_plugin.agent.settings import load_settings
from cloudmanagers_plugin.call import RpcClient, build_request
from cloudmanagers_plugin.config import ConfigFile
from tests.support.e2e import harness

pytestmark = pytest.mark.e2e


@pytest.fixture
def appcred_conf(facts, tmp_path):
    demo = facts["credentials"]["demo"]
    path = tmp_path / "cloudmanagers.conf"
    path.write_text(f"""# e2e: a section that moves from a password to an application credential
[e2e_appcred]
cm_type = openstack
keystone_base_url = {facts['auth_url']}
project_name = {demo['project_name']}
username = {demo['username']}
password_file = {tmp_path / 'password'}
application_credential_secret_file = {tmp_path / 'secret'}
""")
    (tmp_path / "password").write_text(demo["password"] + "\n")
    os.chmod(path, 0o600)
    os.chmod(tmp_path / "password", 0o600)
    return str(path)


@pytest.fixture
def keystone(facts):
    demo = facts["credentials"]["demo"]
    session = ks_session.Session(auth=v3.Password(auth_url=facts["auth_url"], **demo))
    client = ks_client.Client(session=session, endpoint_override=facts["auth_url"])
    yield client, session.get_user_id()
    for credential in client.application_credentials.list(user=session.get_user_id()):
        if credential.name.startswith("cloudmanagers-e2e_appcred-"):
            client.application_credentials.delete(credential.id, user=session.get_user_id())


def test_rotation_while_an_agent_serves_reads(appcred_conf, keystone, tmp_path):
    client, user_id = keystone
    created = harness.cloudmanagers("credentials", "create", "e2e_appcred", "--config", appcred_conf, "--expires", "1")
    assert created.returncode == 0, created.stderr
    first = ConfigFile(appcred_conf).get("e2e_appcred")
    assert first.uses_application_credential
    assert [c.id for c in client.application_credentials.list(user=user_id) if c.id == first.application_credential_id]

    replies, stop = [], threading.Event()
    with harness.Agent(str(tmp_path / "agent"), appcred_conf) as agent:
        rpc = RpcClient(load_settings(agent.agent_config).broker)

        def stream():
            while not stop.is_set():
                correlation_id, _ = rpc.send(build_request("read", "e2e_appcred", {}, agent.uuid), "", agent.uuid, 30)
                replies.append(next((reply for reply, _ in rpc.replies(correlation_id, 30)),
                                    {"error": "no reply within 30 s"}))

        reader = threading.Thread(target=stream)
        reader.start()
        try:
            rotated = harness.cloudmanagers("credentials", "rotate", "e2e_appcred", "--config", appcred_conf,
                                            "--grace", "2")
            after = len(replies)
            while len(replies) < after + 5:  # a few more reads with only the new credential alive
                reader.join(0.1)
        finally:
            stop.set()
            reader.join(60)
            rpc.close()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", agent.uuid], capture_output=True)
    assert rotated.returncode == 0, rotated.stderr
    assert len(replies) > 10 and [r.get("error") for r in replies if "error" in r] == []
    assert all(isinstance(r["status"]["VMs"], list) for r in replies)
    second = ConfigFile(appcred_conf).get("e2e_appcred")
    assert second.application_credential_id != first.application_credential_id
    ids = {c.id for c in client.application_credentials.list(user=user_id)}
    assert second.application_credential_id in ids and first.application_credential_id not in ids
    assert (tmp_path / "secret").read_text().strip() == second.application_credential_secret
    assert second.application_credential_secret not in rotated.stdout + rotated.stderr
