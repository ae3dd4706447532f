"""`cloudmanagers credentials create|rotate` against the faked Keystone, and the in-place file edit."""

import os
import stat

import pytest

from cloudmanagers_plugin import cli
from cloudmanagers_plugin.conffile import replace_atomically, set_keys
from cloudmanagers_plugin.config import ConfigFile
from cloudmanagers_plugin.errors import ConfigError
from tests.support.fakecloud import PASSWORD

FILE = f"""# the cloud managers
[first]
cm_type = openstack
keystone_base_url = http://127.0.0.1:5000/v3
project_name = demo
username = demo
password = {PASSWORD}

[appcred]
cm_type = openstack
# Keystone of the lab
keystone_base_url = http://127.0.0.1:5000/v3
project_name = demo
username = demo
password = {PASSWORD}
; the end of the section
"""


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "cloudmanagers.conf"
    path.write_text(FILE)
    os.chmod(path, 0o640)
    return path


def run(*args):
    return cli.main(["credentials", *args])


def test_create_writes_the_credential_and_keeps_everything_else(cloud, conf, capsys):
    assert run("create", "appcred", "--config", str(conf), "--expires", "30") == 0
    text = conf.read_text()
    (credential,) = cloud.app_credentials.values()
    assert credential["unrestricted"] is False and credential["expires_at"]
    assert text.startswith(FILE.split("[appcred]")[0])  # the other section and the comments untouched
    assert "# Keystone of the lab\n" in text and text.endswith("; the end of the section\n")
    assert f"application_credential_id = {credential['id']}\n" in text
    assert f"application_credential_secret = {credential['secret']}\n" in text
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o640
    section = ConfigFile(str(conf)).get("appcred")
    assert section.uses_application_credential and section.application_credential_id == credential["id"]
    assert credential["secret"] not in capsys.readouterr().out


def test_rotate_with_a_secret_file_deletes_the_old_one_last(cloud, conf, tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    conf.write_text(FILE.replace("; the end", f"application_credential_secret_file = {secret}\n; the end"))
    assert run("create", "appcred", "--config", str(conf)) == 0
    (old,) = cloud.app_credentials.values()
    assert secret.read_text() == old["secret"] + "\n" and stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert "application_credential_secret =" not in conf.read_text()
    deleted_while = []
    monkeypatch.setattr("time.sleep", lambda s: deleted_while.append(old["id"] in cloud.app_credentials))
    assert run("rotate", "appcred", "--config", str(conf), "--grace", "3") == 0
    (new,) = cloud.app_credentials.values()
    assert new["id"] != old["id"] and secret.read_text() == new["secret"] + "\n"
    assert f"application_credential_id = {new['id']}" in conf.read_text()
    assert deleted_while == [True]  # the old one still existed during the grace period


def test_create_refuses_a_section_that_has_one(cloud, conf, capsys):
    assert run("create", "appcred", "--config", str(conf)) == 0
    assert run("create", "appcred", "--config", str(conf)) == 2
    assert "already has an application credential; use: cloudmanagers credentials rotate" in capsys.readouterr().err
    assert run("rotate", "first", "--config", str(conf)) == 2
    assert "has no application credential to rotate" in capsys.readouterr().err


def test_a_credential_that_does_not_verify_is_undone(cloud, conf, monkeypatch, capsys):
    monkeypatch.setattr(cloud, "add_app_credential",
                        lambda name, secret: {"id": "x1", "name": name, "secret": secret})  # Keystone forgets it
    assert run("create", "appcred", "--config", str(conf)) == 1
    error = capsys.readouterr().err
    assert "the new credential does not work, the file was put back" in error and "delete it by hand" in error
    assert conf.read_text() == FILE


def test_without_a_password_it_asks_for_one(cloud, conf, capsys, monkeypatch):
    conf.write_text(FILE.replace(f"password = {PASSWORD}\n; the end",
                                 "application_credential_id = abc\napplication_credential_secret = s\n; the end"))
    monkeypatch.delenv("OS_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run("rotate", "appcred", "--config", str(conf)) == 2
    assert "give --password-file, or set OS_PASSWORD" in capsys.readouterr().err


def test_set_keys_replaces_adds_and_removes_in_one_section():
    text = "[a]\nk = 1\n\n[b]\nk = 1\n  continued\nx = 2\n# note\n[c]\nk = 1"
    assert set_keys(text, "b", {"k": "9", "x": None, "new": "n"}) == (
        "[a]\nk = 1\n\n[b]\nk = 9\nnew = n\n# note\n[c]\nk = 1\n")
    with pytest.raises(ConfigError, match=r"section \[z\] is not in the file"):
        set_keys(text, "z", {"k": "1"})


def test_replace_atomically_keeps_the_mode(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")
    os.chmod(path, 0o604)
    replace_atomically(str(path), "new")
    assert path.read_text() == "new" and stat.S_IMODE(os.stat(path).st_mode) == 0o604
    assert os.listdir(tmp_path) == ["f"]  # no temporary file left


def test_a_file_that_cannot_be_written_deletes_the_new_credential(cloud, conf, monkeypatch, capsys):
    def refuse(path, text):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("cloudmanagers_plugin.credentials.replace_atomically", refuse)
    assert run("create", "appcred", "--config", str(conf)) == 1
    error = capsys.readouterr().err
    assert f"cannot write {conf}: Permission denied" in error and "was deleted" in error
    assert cloud.app_credentials == {} and conf.read_text() == FILE
