"""The cloud managers file: paths, legacy spellings, clouds.yaml, validation, reloads."""

import logging
import os

import pytest

from cloudmanagers_plugin import config as cfg
from cloudmanagers_plugin.config import ConfigFile, compute_v21_url, identity_v3_url
from cloudmanagers_plugin.errors import ConfigError, NotFound
from tests.support.controller import LEGACY_SECTION, write_config


@pytest.mark.parametrize("url,expected", [
    ("http://h:35357/v2.0", "http://h:35357/v3"), ("http://h:5000/v2.0/", "http://h:5000/v3"),
    ("http://h:5000/v3", "http://h:5000/v3"), ("http://h:5000", "http://h:5000/v3"),
    ("https://h/identity/", "https://h/identity/v3"),
])
def test_keystone_urls_become_v3(url, expected):
    assert identity_v3_url(url) == expected


@pytest.mark.parametrize("url,expected", [
    ("http://h:8774/v2/", "http://h:8774/v2.1"), ("http://h:8774/v2/faae83f70c1f", "http://h:8774/v2.1"),
    ("http://h:8774/v2.1", "http://h:8774/v2.1"), ("http://h:8774", "http://h:8774/v2.1"),
])
def test_nova_urls_become_v21(url, expected):
    assert compute_v21_url(url) == expected


def test_legacy_section(conf_path):
    section = ConfigFile(conf_path).get("test_os")
    assert section.auth_url == "http://127.0.0.1:5000/v3" and section.project_name == "demo"
    assert section.compute_url == "http://127.0.0.1:8774/v2.1"
    assert section.user_domain_name == section.project_domain_name == "Default"
    assert "password" not in repr(section)


def test_v3_section_with_every_key(tmp_path):
    path = write_config(tmp_path / "c.conf", """
        [v3]
        cm_type = OpenStack
        auth_url = https://k.example:5000/v3
        project_name = p
        username = u
        password = pw
        user_domain_name = users
        project_domain_name = projects
        region_name = R2
        interface = internalURL
        insecure = yes
        timeout = 7.5
        networks = none
        protect_running = true
        """)
    section = ConfigFile(path).get("v3")
    assert (section.cm_type, section.url, section.region_name, section.interface) == \
        ("openstack", "https://k.example:5000", "R2", "internal")
    assert section.insecure is True and section.timeout == 7.5 and section.compute_url is None
    assert (section.user_domain_name, section.project_domain_name, section.networks) == ("users", "projects", "none")
    assert section.protect_running is True
    assert ConfigFile(write_config(tmp_path / "d.conf", LEGACY_SECTION)).get("test_os").protect_running is False


def test_path_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(cfg.ENV_VAR, raising=False)
    monkeypatch.setattr(cfg, "DEFAULT_PATHS", (str(tmp_path / "a.conf"), str(tmp_path / "b.conf")))
    assert cfg.resolve_path() == str(tmp_path / "a.conf")
    (tmp_path / "b.conf").write_text("")
    assert cfg.resolve_path() == str(tmp_path / "b.conf")
    monkeypatch.setenv(cfg.ENV_VAR, "/from/env.conf")
    assert cfg.resolve_path() == "/from/env.conf"
    assert cfg.resolve_path("/explicit.conf") == "/explicit.conf"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        ConfigFile(str(tmp_path / "none.conf")).section_ids()
    assert "none.conf" in str(err.value) and "CLOUDMANAGERS_CONF" in str(err.value)


def test_invalid_ini(tmp_path):
    path = write_config(tmp_path / "c.conf", "no section header\n")
    with pytest.raises(ConfigError) as err:
        ConfigFile(path).section_ids()
    assert "c.conf: not a valid INI file" in str(err.value)


@pytest.mark.parametrize("line,key,words", [
    ("password =", "password", "is missing or empty"),
    ("timeout = soon", "timeout", "must be a positive number"),
    ("insecure = perhaps", "insecure", "must be true or false"),
    ("protect_running = sometimes", "protect_running", "must be true or false"),
    ("interface = sideways", "interface", "must be one of"),
    ("keystone_base_url = 127.0.0.1:5000", "keystone_base_url", "must be an http(s) URL"),
    ("cacert = /no/such/ca.pem", "cacert", "does not exist"),
    ("compute_api_version = 2.1", "compute_api_version", "2.47 or later"),
    ("compute_api_version = latest", "compute_api_version", "2.47 or later"),
])
def test_invalid_key_names_file_section_and_key(tmp_path, line, key, words):
    section = "\n".join(row for row in LEGACY_SECTION.splitlines() if not row.startswith(key + " "))
    path = write_config(tmp_path / "c.conf", section + "\n" + line + "\n" + "[other]\ncm_type = openstack\n"
                        "keystone_base_url = http://127.0.0.1:5000/v3\nproject_name = p\nusername = u\npassword = p\n")
    config = ConfigFile(path)
    with pytest.raises(ConfigError) as err:
        config.get("test_os")
    assert f"{path}: section [test_os]: key '{key}'" in str(err.value) and words in str(err.value)
    assert config.get("other").username == "u"  # the other sections keep working
    assert config.section_ids() == ["test_os", "other"]


def test_unknown_section(conf_path):
    with pytest.raises(NotFound) as err:
        ConfigFile(conf_path).get("nope")
    assert "unknown cloud manager 'nope'" in str(err.value) and "test_os" in str(err.value)


def test_reread_only_when_changed(conf_path, monkeypatch):
    config = ConfigFile(conf_path)
    loads = []
    original = config._load
    monkeypatch.setattr(config, "_load", lambda *a: (loads.append(1), original(*a)))
    for _ in range(20):
        config.get("test_os")
    assert len(loads) == 1
    with open(conf_path, "a") as handle:
        handle.write("\n[second]\ncm_type = openstack\nauth_url = http://127.0.0.1:5000\nproject_name = p\n"
                     "username = u\npassword = p\n")
    assert config.section_ids() == ["test_os", "second"] and len(loads) == 2


def test_world_readable_file_warns(conf_path, caplog):
    os.chmod(conf_path, 0o644)
    with caplog.at_level(logging.WARNING):
        ConfigFile(conf_path).section_ids()
    assert "readable by other users" in caplog.text


def test_clouds_yaml(tmp_path):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("""
clouds:
  mycloud:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: demo
      project_name: demo
      user_domain_name: Users
      project_domain_name: Default
    region_name: RegionOne
    verify: false
""")
    (tmp_path / "secure.yaml").write_text("clouds:\n  mycloud:\n    auth:\n      password: from-secure\n")
    path = write_config(tmp_path / "c.conf", f"""
        [yaml]
        cm_type = openstack
        cloud = mycloud
        clouds_yaml = {clouds}
        timeout = 9
        """)
    section = ConfigFile(path).get("yaml")
    assert (section.username, section.password, section.user_domain_name) == ("demo", "from-secure", "Users")
    assert section.insecure is True and section.timeout == 9 and section.region_name == "RegionOne"


def test_clouds_yaml_unknown_cloud(tmp_path):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")
    path = write_config(tmp_path / "c.conf", f"[y]\ncm_type = openstack\ncloud = nope\nclouds_yaml = {clouds}\n")
    with pytest.raises(ConfigError) as err:
        ConfigFile(path).get("y")
    assert "key 'cloud'" in str(err.value) and "cloud 'nope' is not in" in str(err.value)


def test_unknown_cm_type_is_a_clear_error(tmp_path, cloud):
    from cloudmanagers_plugin import CloudmanagersController

    path = write_config(tmp_path / "c.conf", LEGACY_SECTION.replace("cm_type = openstack", "cm_type = vsphere"))
    reply = CloudmanagersController(config_path=path).process(
        {"collection": "cloudmanagers", "action": "read", "id": "test_os"})
    assert "section [test_os]: key 'cm_type': unknown cloud manager type 'vsphere' (supported: openstack)" \
        in reply["error"]
