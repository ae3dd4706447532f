"""The OpenStack libraries are imported only where they run (a driver being built), so the
plugin imports on a host without them and the command's light paths never load them."""

import json
import subprocess
import sys
import textwrap

import pytest

from cloudmanagers_plugin.config import ConfigFile
from cloudmanagers_plugin.drivers import driver_class
from cloudmanagers_plugin.errors import MissingLibrary
from tests.support.controller import LEGACY_SECTION, write_config

OPENSTACK = ("keystoneauth1", "novaclient", "keystoneclient")
AGENT_ONLY = ("prometheus_client",)  # the running agent's metrics: no other path loads it

PROBE = textwrap.dedent(f"""
    import json, sys
    from cloudmanagers_plugin.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {OPENSTACK + AGENT_ONLY!r})))
""")


# a whole `call read` and `watch` (no broker on port 1: they end at the connection) and the command's help pages
@pytest.mark.parametrize("argv", [
    ["--version"], ["call", "--help"], ["agent", "--help"],
    ["call", "read", "cm1", "--url", "amqp://guest:guest@127.0.0.1:1/", "--timeout", "0.2"],
    ["watch", "--help"], ["watch", "--url", "amqp://guest:guest@127.0.0.1:1/", "--exchange", "events"],
])
def test_command_imports_no_openstack_module(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_importing_the_package_loads_no_openstack_module():
    probe = ("import json, sys, cloudmanagers_plugin; "
             f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {OPENSTACK + AGENT_ONLY!r}]))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("module,pip_name,rpm_name", [
    ("keystoneauth1", "keystoneauth1", "python3-keystoneauth1"),
    ("novaclient", "python-novaclient", "python3-novaclient"),
])
def test_missing_library_names_it_and_how_to_install(monkeypatch, module, pip_name, rpm_name):
    monkeypatch.delitem(sys.modules, "cloudmanagers_plugin.drivers.openstack", raising=False)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` fail as if absent
    with pytest.raises(MissingLibrary) as err:
        driver_class("openstack")
    assert f"'{module}' is not installed" in str(err.value)
    assert f"yum install {rpm_name}" in str(err.value) and f"pip install {pip_name}" in str(err.value)


def test_missing_library_is_an_error_reply(call, monkeypatch):
    monkeypatch.delitem(sys.modules, "cloudmanagers_plugin.drivers.openstack", raising=False)
    monkeypatch.setitem(sys.modules, "keystoneauth1", None)
    reply = call("read")
    assert reply["status"] == {} and "pip install keystoneauth1" in reply["error"]
    assert call("read", "")["status"] == {"cloudmanagers": ["test_os"]}  # what needs no driver still works


def test_clouds_yaml_without_pyyaml_is_a_section_error(tmp_path, monkeypatch):
    (tmp_path / "clouds.yaml").write_text("clouds: {}\n")
    path = write_config(tmp_path / "c.conf", LEGACY_SECTION + "\n[from_yaml]\ncm_type = openstack\ncloud = x\n"
                        f"clouds_yaml = {tmp_path / 'clouds.yaml'}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    config = ConfigFile(path)
    with pytest.raises(MissingLibrary, match="PyYAML.*pip install PyYAML"):
        config.get("from_yaml")
    assert config.get("test_os").username == "demo"  # the other sections keep working
