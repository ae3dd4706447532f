"""The operator's view on the real devcloud: check-config's live checks, the `call` command line
(flags, tables, refusals) and the agent's start-up log (issue 16)."""

import os

import pytest

from tests.support.e2e import harness, settle

pytestmark = pytest.mark.e2e


def _section(facts, name, **overrides):
    keys = {"cm_type": "openstack", "keystone_base_url": facts["auth_url"], **facts["credentials"]["demo"],
            **overrides}
    return f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())


def test_check_config_live_checks(facts, tmp_path):
    port = facts["ports"]["nova"]
    path = tmp_path / "cloudmanagers.conf"
    path.write_text("\n".join([
        _section(facts, "good"),
        _section(facts, "deadnova", nova_base_url="http://127.0.0.1:1/v2.1"),
        _section(facts, "region", region_name="Nowhere"),
        _section(facts, "microversion", compute_api_version="2.200"),
        _section(facts, "notkeystone", keystone_base_url=f"http://127.0.0.1:{port}/v3"),
    ]))
    os.chmod(path, 0o600)
    result = harness.cloudmanagers("check-config", "--config", str(path), timeout=120)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert result.returncode == 2, result.stdout + result.stderr  # 2: a section is INVALID
    assert rows["good"].endswith("OK")
    assert "FAILED" in rows["deadnova"] and "reach the compute API" in rows["deadnova"]
    assert "FAILED" in rows["region"] and "region Nowhere" in rows["region"]
    assert "INVALID" in rows["microversion"] and "2.200" in rows["microversion"]
    assert "FAILED" in rows["notkeystone"] and "did not answer as a Keystone identity API" in rows["notkeystone"]
    assert "Traceback" not in result.stderr


def test_call_flags_tables_and_refusals(agent, nova, facts, sections, vm_name):
    cm = sections["v3"]
    refused = harness.cloudmanagers("call", "create", cm, "--name", vm_name, "--flavor", "m1.tiny",
                                    "--image", "cirros-fake")
    assert refused.returncode == 2 and "--target" in refused.stderr
    assert not [server for server in nova.servers.list() if server.name == vm_name]

    created = harness.cloudmanagers("call", "create", cm, "--name", vm_name, "--flavor", "m1.tiny",
                                    "--image", "cirros-fake", "--wait", "90", "--target", agent.uuid)
    assert created.returncode == 0, created.stderr
    server_id = next(line.split()[1] for line in created.stdout.splitlines() if line.startswith("vm_id "))
    assert settle(nova, server_id, "ACTIVE") == ("ACTIVE", "m1.tiny")

    listed = harness.cloudmanagers("call", "read", cm, "--target", agent.uuid)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    header = next(line for line in lines if line.split() == ["ID", "NAME", "STATUS"])
    assert header.startswith("  ") and f"  {server_id}  {vm_name}" in listed.stdout
    assert [line.split()[2] for line in lines if server_id in line] == ["ACTIVE"]

    images = harness.cloudmanagers("call", "read", cm, "--attr", "listimages=1", "--target", agent.uuid)
    assert "  ID" in images.stdout and "cirros-fake" in images.stdout and "LINKS" not in images.stdout

    protected = "devcloud_protected"  # the same project, with protect_running = true
    kept = harness.cloudmanagers("call", "delete", protected, "--name", vm_name, "--target", agent.uuid)
    assert kept.returncode == 1 and "pass --force" in kept.stderr and kept.stdout == ""
    assert settle(nova, server_id)[0] == "ACTIVE"

    deleted = harness.cloudmanagers("call", "delete", protected, "--name", vm_name, "--force", "--wait", "60",
                                    "--target", agent.uuid)
    assert deleted.returncode == 0, deleted.stderr
    assert settle(nova, server_id, "DELETED")[0] == "DELETED"


def test_agent_logged_its_sections_at_start(agent, facts, sections):
    log = agent.tail(400)
    keystone = facts["auth_url"].rstrip("/")
    for section in (sections["legacy"], sections["v3"], "devcloud_yaml", "wrongpw"):
        assert f"cloud manager '{section}': openstack, keystone {keystone}" in log, log
    assert f"consuming from queue {agent.uuid}" in log
