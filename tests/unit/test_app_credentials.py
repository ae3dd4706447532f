"""Application credentials and secrets in files: config keys, authentication, reload on change."""

import os

import pytest

from cloudmanagers_plugin import CloudmanagersController, cli
from cloudmanagers_plugin.config import ConfigFile
from cloudmanagers_plugin.errors import ConfigError
from tests.support.controller import LEGACY_SECTION, status_of, write_config
from tests.support.fakecloud import PASSWORD

BASE = """
[appcred]
cm_type = openstack
keystone_base_url = http://127.0.0.1:5000/v3
"""


def read(controller, cm="appcred"):
    return controller.process({"collection": "cloudmanagers", "action": "read", "id": cm, "attributes": {}})


def test_application_credential_by_id_authenticates(tmp_path, cloud):
    credential = cloud.add_app_credential()
    path = write_config(tmp_path / "c.conf", BASE + f"application_credential_id = {credential['id']}\n"
                        f"application_credential_secret = {credential['secret']}\n")
    assert status_of(read(CloudmanagersController(config_path=path)))["VMs"] == []
    body = cloud.mocker.request_history[0].json()["auth"]["identity"]
    assert body["methods"] == ["application_credential"] and body["application_credential"]["id"] == credential["id"]


def test_application_credential_by_name_needs_username(tmp_path, cloud):
    credential = cloud.add_app_credential(name="cm-demo")
    path = write_config(tmp_path / "c.conf", BASE + "application_credential_name = cm-demo\nusername = demo\n"
                        f"application_credential_secret = {credential['secret']}\n")
    assert status_of(read(CloudmanagersController(config_path=path)))["VMs"] == []
    path = write_config(tmp_path / "d.conf", BASE + f"application_credential_name = cm-demo\n"
                        f"application_credential_secret = {credential['secret']}\n")
    assert "give it, or application_credential_name with username" in read(CloudmanagersController(config_path=path))["error"]


def test_a_wrong_secret_names_the_application_credential(tmp_path, cloud):
    credential = cloud.add_app_credential()
    path = write_config(tmp_path / "c.conf", BASE + f"application_credential_id = {credential['id']}\n"
                        "application_credential_secret = wrong-secret\n")
    error = read(CloudmanagersController(config_path=path))["error"]
    assert "refused the credentials (401)" in error and "application_credential" in error
    assert "wrong-secret" not in error


def test_secrets_from_files(tmp_path, cloud):
    credential = cloud.add_app_credential()
    secret_file = tmp_path / "secret"
    secret_file.write_text(credential["secret"] + "\n")
    os.chmod(secret_file, 0o600)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    path = write_config(tmp_path / "c.conf", BASE + f"application_credential_id = {credential['id']}\n"
                        f"application_credential_secret_file = {secret_file}\n"
                        + LEGACY_SECTION.replace(f"password = {PASSWORD}", f"password_file = {password_file}"))
    controller = CloudmanagersController(config_path=path)
    assert status_of(read(controller))["VMs"] == [] and status_of(read(controller, "test_os"))["VMs"] == []
    section = ConfigFile(path).get("appcred")
    assert credential["secret"] not in repr(section) and section.application_credential_secret == credential["secret"]


@pytest.mark.parametrize("extra,words", [
    ("application_credential_id = abc\n", "application_credential_secret' is missing"),
    ("application_credential_id = abc\napplication_credential_secret_file = /nonexistent/s\n",
     "cannot read /nonexistent/s"),
    ("application_credential_id = abc\napplication_credential_secret = s\napplication_credential_secret_file = /x\n",
     "not both"),
    ("username = demo\nproject_name = demo\n", "'password' is missing or empty (or set password_file"),
])
def test_bad_credential_keys(tmp_path, extra, words):
    path = write_config(tmp_path / "c.conf", BASE + extra)
    with pytest.raises(ConfigError) as caught:
        ConfigFile(path).get("appcred")
    assert words in str(caught.value)


def test_a_new_credential_in_the_file_is_used_without_restart(tmp_path, cloud):
    old, new = cloud.add_app_credential("old", "old-secret"), cloud.add_app_credential("new", "new-secret")
    conf = tmp_path / "c.conf"
    path = write_config(conf, BASE + f"application_credential_id = {old['id']}\napplication_credential_secret = old-secret\n")
    controller = CloudmanagersController(config_path=path)
    assert status_of(read(controller))["VMs"] == []
    write_config(conf, BASE + f"application_credential_id = {new['id']}\napplication_credential_secret = new-secret\n"
                 "# a comment that changes the size\n")
    del cloud.app_credentials[old["id"]]  # the old one is gone: only the new one can work
    assert status_of(read(controller))["VMs"] == []


def test_check_config_names_the_application_credential(tmp_path, cloud, capsys):
    credential = cloud.add_app_credential()
    path = write_config(tmp_path / "c.conf", BASE + f"application_credential_id = {credential['id']}\n"
                        f"application_credential_secret = {credential['secret']}\n")
    cli.main(["check-config", "--config", path, "--json"])
    out = capsys.readouterr().out
    assert f"? (application credential {credential['id']})" in out and credential["secret"] not in out


def test_clouds_yaml_application_credential(tmp_path, cloud):
    credential = cloud.add_app_credential()
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"""clouds:
  lab:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://127.0.0.1:5000/v3
      application_credential_id: {credential['id']}
      application_credential_secret: {credential['secret']}
""")
    path = write_config(tmp_path / "c.conf", f"[appcred]\ncm_type = openstack\ncloud = lab\nclouds_yaml = {clouds}\n")
    section = ConfigFile(path).get("appcred")
    assert section.uses_application_credential and section.application_credential_id == credential["id"]
    assert status_of(read(CloudmanagersController(config_path=path)))["VMs"] == []
