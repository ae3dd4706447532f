"""`make install-dropin`: the plugin folder alone, loaded the way the synapse agent loads
its custom plugins (see synapse_agent_stub/)."""

import os
import shutil
import stat

import pytest

from tests.support.packaging import (
    NOT_SOURCE, PACKAGE, READ_ALL, REPO, load_like_synapse, need_tool, package_source_files, run,
    write_cloudmanagers_conf,
)

pytestmark = pytest.mark.packaging


def installed_files(dest):
    base = dest / PACKAGE
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def dropin(tmp_path):
    need_tool("make")
    dest = tmp_path / "custom_plugin"
    run(["make", "-C", REPO, "install-dropin", f"DEST={dest}"])
    return dest


def test_installs_exactly_the_package(dropin):
    files = installed_files(dropin)
    assert files == {
        f for f in package_source_files()
        if not f.startswith(("tests/", "test/")) and "/tests/" not in f and not os.path.basename(f).startswith("test_")
    }
    assert "__init__.py" in files and "version.py" in files
    assert os.listdir(dropin) == [PACKAGE], "only the package folder goes in the plugin folder"
    for path in (dropin / PACKAGE).rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_leaves_out_tests_and_bytecode(tmp_path):
    """Run on a copy of the tree that has bytecode, a tests folder and a test module."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    pkg = source / PACKAGE
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "version.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "stray.pyc").write_bytes(b"\0")
    (pkg / "tests").mkdir()
    (pkg / "tests" / "test_something.py").write_text("")
    (pkg / "test_inline.py").write_text("")
    dest = tmp_path / "custom_plugin"
    run(["sh", source / "packaging" / "install-dropin.sh", dest])
    files = installed_files(dest)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or "test" in os.path.basename(f)]
    assert "__init__.py" in files


def test_reinstall_removes_stale_modules(dropin):
    (dropin / PACKAGE / "removed_in_this_release.py").write_text("")
    run(["make", "-C", REPO, "install-dropin", f"DEST={dropin}"])
    assert not (dropin / PACKAGE / "removed_in_this_release.py").exists()
    assert os.listdir(dropin) == [PACKAGE], "no staging folder left behind"


@pytest.mark.parametrize("folder", [PACKAGE, "cloudmanagers-plugin"])
def test_synapse_agent_loads_the_folder(dropin, tmp_path, folder):
    """The agent registers `cloudmanagers` and answers a read with an empty id: the ids of
    the cloud managers file's sections. The 2013 plugin's folder name, with a hyphen, loads too."""
    if folder != PACKAGE:
        (dropin / PACKAGE).rename(dropin / folder)
    conf = write_cloudmanagers_conf(tmp_path / "cloudmanagers.conf", ("alpha", "beta"))
    report = load_like_synapse(tmp_path, dropin, [READ_ALL], env={"CLOUDMANAGERS_CONF": str(conf)})
    assert report["custom_plugins"] == str(dropin)
    assert report["registered"] == ["cloudmanagers"]
    assert report["is_resources_controller"], "the controller must subclass the agent's ResourcesController"
    assert report["module"] == "None"   # os_mapping [default] default = None
    assert report["publish_queue"] == "publish-queue"
    assert report["plugin_file"].startswith(str(dropin / folder) + os.sep)
    reply = report["replies"][0]
    assert "error" not in reply, reply
    assert reply["collection"] == "cloudmanagers"
    assert reply["resource_id"] == ""
    assert reply["msg_type"] == "response"
    assert sorted(reply["status"]["cloudmanagers"]) == ["alpha", "beta"]


def test_custom_resources_alone_loads_nothing(dropin, tmp_path):
    """The plugin's old documentation names `custom_resources`; the agent reads only `custom_plugins`."""
    conf = write_cloudmanagers_conf(tmp_path / "cloudmanagers.conf", ("alpha",))
    report = load_like_synapse(tmp_path, dropin, [READ_ALL], key="custom_resources",
                               env={"CLOUDMANAGERS_CONF": str(conf)})
    assert report["custom_plugins"] != str(dropin)
    assert "cloudmanagers" not in report["registered"]
    assert report["replies"] == [{"error": "The resource [cloudmanagers] does not exist"}]


def test_missing_openstack_library_keeps_the_agent_up(dropin, tmp_path):
    """Without keystoneauth1 (nor novaclient, keystoneclient, nor pika and PyYAML, which the
    plugin needs only for clouds.yaml and the standalone agent) the plugin still imports and
    registers; a request that needs OpenStack answers which library to install."""
    conf = write_cloudmanagers_conf(tmp_path / "cloudmanagers.conf", ("alpha",))
    read_vms = {**READ_ALL, "id": "alpha"}
    report = load_like_synapse(tmp_path, dropin, [READ_ALL, read_vms], env={"CLOUDMANAGERS_CONF": str(conf)},
                               missing=("keystoneauth1", "novaclient", "keystoneclient", "pika", "yaml"))
    assert report["registered"] == ["cloudmanagers"]
    listed, failed = report["replies"]
    assert listed["status"] == {"cloudmanagers": ["alpha"]}
    assert failed["status"] == {} and failed["resource_id"] == "alpha"
    assert "'keystoneauth1' is not installed" in failed["error"]
    assert "yum install python3-keystoneauth1" in failed["error"] and "pip install keystoneauth1" in failed["error"]
