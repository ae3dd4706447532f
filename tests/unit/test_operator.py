"""What an operator reads: check-config's rows and exit codes, error texts that point at the fix,
log lines in a terminal and in the journal, and the README's commands (issue 16)."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import requests

from cloudmanagers_plugin import cli
from cloudmanagers_plugin.agent.settings import load_settings
from cloudmanagers_plugin.errors import ConfigError
from tests.support.controller import LEGACY_SECTION, status_of, write_config
from tests.support.fakecloud import NOVA

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V3_SECTION = LEGACY_SECTION.replace("[test_os]", "[v3]").replace("nova_base_url = http://127.0.0.1:8774/v2/\n", "")


def rows_of(out):
    return {line.split()[0]: line for line in out.splitlines()[2:]}


# -- check-config: the compute endpoint, the microversion, warnings, --json, exit codes ---------


def test_check_config_reaches_the_compute_api(tmp_path, cloud, capsys):
    path = write_config(tmp_path / "c.conf", LEGACY_SECTION + V3_SECTION.replace("[v3]", "[deadnova]").replace(
        "tenant_name", "nova_base_url = http://127.0.0.1:18774/v2.1\ntenant_name") + V3_SECTION.replace(
        "[v3]", "[region]") + "region_name = Nowhere\n")
    cloud.mocker.get("http://127.0.0.1:18774/v2.1/", exc=requests.exceptions.ConnectionError("refused"))
    assert cli.main(["check-config", "--config", path]) == 1
    rows = rows_of(capsys.readouterr().out)
    assert rows["test_os"].endswith("OK")
    assert "FAILED" in rows["deadnova"] and "cannot connect to OpenStack while trying to reach the compute API" in \
        rows["deadnova"]
    assert "FAILED" in rows["region"] and "region Nowhere" in rows["region"] and "check region_name" in rows["region"]
    assert any(request.endswith("/v2.1/") for request in cloud.requests())


def test_check_config_compares_the_microversion_with_the_cloud(tmp_path, cloud, capsys):
    path = write_config(tmp_path / "c.conf", LEGACY_SECTION + V3_SECTION + "compute_api_version = 2.200\n"
                        + V3_SECTION.replace("[v3]", "[above]") + "compute_api_version = 2.90\n")
    cloud.mocker.get(f"{NOVA}/", json={"version": {"id": "v2.1", "version": "2.60", "min_version": "2.1"}})
    assert cli.main(["check-config", "--config", path]) == 2
    rows = rows_of(capsys.readouterr().out)
    assert "INVALID" in rows["v3"] and "key 'compute_api_version' is 2.200, above what python-novaclient" in rows["v3"]
    assert "INVALID" in rows["above"] and "is 2.90, above this cloud's maximum 2.60" in rows["above"]
    assert rows["test_os"].endswith("OK")


def test_check_config_warnings_are_rows_and_fail_with_strict(tmp_path, cloud, capsys):
    path = write_config(tmp_path / "c.conf", LEGACY_SECTION + "pasword = typo\n")
    os.chmod(path, 0o644)
    assert cli.main(["check-config", "--config", path]) == 0
    rows = rows_of(capsys.readouterr().out)
    assert "WARN" in rows["(file)"] and "readable by other users" in rows["(file)"]
    assert "WARN" in rows["test_os"] and "key 'pasword' is unknown and ignored" in rows["test_os"]
    assert cli.main(["check-config", "--strict", "--config", path]) == 2


def test_check_config_json_and_verbose_after_the_subcommand(conf_path, cloud, capsys):
    assert cli.main(["check-config", "--config", conf_path, "--json", "-v"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["file"] == conf_path and report["exit"] == 0
    assert report["sections"] == [{"section": "test_os", "type": "openstack", "keystone": "http://127.0.0.1:5000/v3",
                                   "project": "demo", "result": "OK", "message": ""}]


def test_check_config_unreadable_file_is_exit_2_with_the_reason(tmp_path, capsys):
    folder = tmp_path / "c.conf"
    folder.mkdir()  # a path that exists but cannot be read as a file, even by root
    assert cli.main(["check-config", "--config", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: cannot read the cloud managers file: Is a directory" in err and "Errno" not in err


# -- error texts that point at the fix ---------------------------------------------------------


def test_a_url_that_is_not_keystone_says_so(tmp_path, cloud, capsys):
    path = write_config(tmp_path / "c.conf", V3_SECTION.replace("5000/v2.0", "8774/v2.1"))
    cloud.mocker.post("http://127.0.0.1:8774/v2.1/v3/auth/tokens", text="<html>nova</html>", status_code=200)
    assert cli.main(["check-config", "--config", path]) == 1
    row = rows_of(capsys.readouterr().out)["v3"]
    assert "did not answer as a Keystone identity API" in row and "check keystone_base_url" in row
    assert "InvalidResponse" not in row


def test_refused_credentials_name_the_user_and_project(controller, cloud):
    cloud.password = "another"
    error = controller.process({"action": "read", "id": "test_os", "attributes": {}})["error"]
    assert "refused the credentials (401) of user 'demo' for project 'demo'" in error
    assert "while authenticate" not in error


def test_an_unknown_image_lists_the_images(call, cloud):
    error = call("create", name="web", flavor="1", image="debian")["error"]
    assert error.endswith("no image named 'debian' (available: 25150b69-c221-4972-822e-9ab1a4884957 (cirros-fake))")


def test_log_level_lists_the_allowed_values(tmp_path):
    path = tmp_path / "agent.conf"
    path.write_text("[log]\nlevel = verbose\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(str(path))
    assert str(refused.value) == "[log] level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'"


def test_unknown_agent_keys_warn_and_legacy_keys_do_not(tmp_path, caplog):
    path = tmp_path / "agent.conf"
    path.write_text("[rabbitmq]\nhots = broker\nstatus_exchange = inbox\n[agent]\nworker = 2\n[log]\npath = /x\n")
    load_settings(str(path))
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warned == [f"{path} [rabbitmq] hots is unknown and ignored (a typo?)",
                      f"{path} [agent] worker is unknown and ignored (a typo?)"]


def test_undecodable_agent_config_is_an_error(tmp_path):
    path = tmp_path / "agent.conf"
    path.write_bytes(b"[rabbitmq]\nhost = \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_settings(str(path))


# -- read on a cloud manager: every VM with its id and state ----------------------------------


def test_read_with_details_lists_ids_and_states(call, cloud):
    web, db = cloud.add_server("web"), cloud.add_server("db", status="SHUTOFF")
    status = status_of(call("read", details=True))
    assert status["VMs"] == ["web", "db"]
    assert status["servers"] == [{"id": web["id"], "name": "web", "status": "ACTIVE"},
                                 {"id": db["id"], "name": "db", "status": "SHUTOFF"}]
    assert set(status_of(call("read"))) == {"cloudmanagers", "url", "VMs"}  # the seed reply is unchanged


# -- logs in a terminal, and in the journal -----------------------------------------------------


def _log_line_of_check_config(tmp_path, journal: bool) -> str:
    """check-config on a world-readable file logs one warning; return what reached stderr."""
    config = write_config(tmp_path / "c.conf", "[cm]\ncm_type = openstack\n")
    os.chmod(config, 0o644)
    with open(tmp_path / "stderr", "w+", encoding="utf-8") as stderr:
        st = os.fstat(stderr.fileno())
        env = {**os.environ, "PYTHONPATH": ROOT}
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-m", "cloudmanagers_plugin.cli", "check-config", "--config", config],
                       stdout=subprocess.DEVNULL, stderr=stderr, env=env, timeout=60, check=False)
        stderr.seek(0)
        return stderr.read()


def test_journal_lines_carry_the_priority_and_no_timestamp(tmp_path):
    text = _log_line_of_check_config(tmp_path, journal=True)
    assert re.match(r"^<4>cloudmanagers_plugin\.config: \S+c\.conf is readable by other users", text), text


def test_terminal_lines_carry_time_and_level(tmp_path):
    text = _log_line_of_check_config(tmp_path, journal=False)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING cloudmanagers_plugin\.config: ", text), text


# -- the README's commands are complete and parse ---------------------------------------------


def _readme_calls():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    commands = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("cloudmanagers call ") and "[" not in line:
            commands.append(shlex.split(line)[1:])
    return commands


def test_readme_shows_a_complete_call_for_every_seed_action():
    parser = cli.build_parser()
    parsed = [parser.parse_args(argv) for argv in _readme_calls()]
    shown = {(args.action, bool(args.cm_id), bool(args.name), "listimages=1" in args.attr) for args in parsed}
    assert {("read", False, False, False), ("read", True, False, False), ("read", True, True, False),
            ("read", True, False, True)} <= shown
    for action in ("create", "update", "delete"):
        changing = [args for args in parsed if args.action == action]
        assert changing and all(args.target and args.cm_id and args.name for args in changing), action
    assert any(args.flavor and args.image for args in parsed if args.action == "create")
    assert any(args.status for args in parsed if args.action == "update")
    assert any(args.flavor for args in parsed if args.action == "update")


def test_the_unit_waits_for_readiness():
    with open(os.path.join(ROOT, "packaging", "systemd", "cloudmanagers-agent.service"), encoding="utf-8") as unit:
        lines = unit.read().splitlines()
    assert "Type=notify" in lines and "RestartPreventExitStatus=2" in lines
