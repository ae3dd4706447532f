"""The noarch RPM: header, file list, config flags and modes, requirements, and that what it
installs works (the plugin loads in a synapse agent, the `cloudmanagers` command runs)."""

import configparser
import os
import re
import subprocess
import sys
import zipfile
from email.parser import HeaderParser

import pytest

from tests.support.packaging import (
    NAME, PACKAGE, PLUGIN_ROOT, READ_ALL, UNIT, WHEEL_NAME, clean_env, load_like_synapse, need_tool, run,
    write_cloudmanagers_conf,
)

pytestmark = pytest.mark.packaging

CONF = "/etc/synapse/cloudmanagers.conf"
LAUNCHER = "/usr/bin/cloudmanagers"
UNIT_PATH = "/usr/lib/systemd/system/" + UNIT
DOCS = ("README.md", "synapse-agent.conf", "permissions.conf")
AGENT_USER = "cloudmanagers"


def rpm_query(artifacts, *args):
    return run(["rpm", "-qp", *args, str(artifacts.rpm)]).stdout


@pytest.fixture(scope="module")
def rpm_files(artifacts):
    """{path: (flags, perms, user, group)} for every file and folder of the RPM."""
    out = rpm_query(
        artifacts, "--qf",
        "[%{FILENAMES}\t%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\n]",
    )
    files = {}
    for line in out.splitlines():
        path, flags, perms, user, group = line.split("\t")
        files[path] = (flags, perms, user, group)
    return files


@pytest.fixture(scope="module")
def dropin_files(artifacts, tmp_path_factory):
    """The files `make install-dropin` installs from the same source tree."""
    dest = tmp_path_factory.mktemp("dropin-for-rpm")
    run(["sh", str(artifacts.source / "packaging" / "install-dropin.sh"), str(dest)])
    return {
        os.path.relpath(os.path.join(folder, name), dest)
        for folder, _dirs, names in os.walk(dest) for name in names
    }


def doc_dir(files, kind="doc"):
    """Fedora/RHEL put docs (and licenses) in /usr/share/doc/NAME, older rpm setups in NAME-VERSION."""
    dirs = [p for p in files if re.fullmatch(r"/usr/share/%s/%s(-[^/]+)?" % (kind, re.escape(NAME)), p)]
    assert len(dirs) == 1, f"no single {kind} folder: {dirs}"
    return dirs[0]


def test_header(artifacts):
    out = rpm_query(artifacts, "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}|%{SUMMARY}")
    name, version, release, arch, license_, summary = out.split("|")
    assert name == NAME
    assert version == artifacts.version  # from cloudmanagers_plugin/version.py
    assert re.match(r"1(\.|$)", release), release
    assert arch == "noarch"
    assert license_ == "Apache-2.0"
    assert summary
    assert artifacts.srpm.name.startswith(f"{NAME}-{artifacts.version}-")


def test_file_list(rpm_files, dropin_files):
    docs = doc_dir(rpm_files)
    licenses = doc_dir(rpm_files, "licenses")
    plugin_dir = f"{PLUGIN_ROOT}/{PACKAGE}"
    plugin_files = {f"{PLUGIN_ROOT}/{rel}" for rel in dropin_files}
    plugin_dirs = {os.path.dirname(p) for p in plugin_files} | {plugin_dir}
    expected = (
        {"/etc/synapse", CONF, LAUNCHER, UNIT_PATH}
        | {docs} | {f"{docs}/{name}" for name in DOCS}
        | {licenses, f"{licenses}/LICENSE"}
        | {"/var/lib/synapse", PLUGIN_ROOT}
        | plugin_dirs
        | plugin_files
    )
    assert set(rpm_files) == expected
    assert f"{plugin_dir}/__init__.py" in rpm_files
    assert f"{plugin_dir}/version.py" in rpm_files


def test_no_bytecode_or_tests(rpm_files):
    for path in rpm_files:
        assert "__pycache__" not in path and not path.endswith((".pyc", ".pyo")), path
        assert "/tests/" not in path and not os.path.basename(path).startswith("test_"), path


def test_config_file_flags_and_mode(rpm_files):
    flags, perms, user, group = rpm_files[CONF]
    assert "c" in flags and "n" in flags, f"{CONF} must be %config(noreplace), flags={flags!r}"
    assert perms == "-rw-r-----"
    assert (user, group) == ("root", AGENT_USER)  # readable by the agent's group, not by others
    others = [p for p, (f, *_rest) in rpm_files.items() if "c" in f and p != CONF]
    assert others == [], f"only {CONF} is a config file"


def test_modes(rpm_files):
    assert rpm_files[LAUNCHER][1] == "-rwxr-xr-x"
    assert rpm_files[UNIT_PATH][1] == "-rw-r--r--"
    for name in DOCS:
        assert "d" in rpm_files[f"{doc_dir(rpm_files)}/{name}"][0], name
    assert "l" in rpm_files[f"{doc_dir(rpm_files, 'licenses')}/LICENSE"][0]
    for path, (_flags, perms, user, group) in rpm_files.items():
        assert (user, group) == ("root", AGENT_USER if path == CONF else "root"), path
        if path.startswith(PLUGIN_ROOT):
            assert perms in ("drwxr-xr-x", "-rw-r--r--"), (path, perms)


def _requires(artifacts):
    reqs = {}
    for line in rpm_query(artifacts, "--requires").splitlines():
        name, _, rest = line.partition(" ")
        reqs[name] = rest.strip()
    return reqs


def test_requires(artifacts):
    reqs = _requires(artifacts)
    for name in ("python3", "python3-novaclient", "python3-keystoneclient", "python3-keystoneauth1",
                 "python3-pika", "python3-pyyaml", "python3-prometheus_client"):
        assert name in reqs, f"the RPM does not require {name}: {sorted(reqs)}"


# Distributions whose Fedora/EPEL package is not python3-<name>.
RPM_NAMES = {"prometheus-client": "python3-prometheus_client"}


def test_requires_match_setup_py(artifacts):
    """Every install_requires of setup.py (read from the wheel) is an RPM Requires, same floor."""
    with zipfile.ZipFile(artifacts.wheel) as whl:
        metadata = HeaderParser().parsestr(
            whl.read(f"{WHEEL_NAME}-{artifacts.version}.dist-info/METADATA").decode()
        )
    reqs = _requires(artifacts)
    python_floor = re.match(r">=\s*([\d.]+)$", metadata["Requires-Python"]).group(1)
    assert reqs.get("python3") == f">= {python_floor}", f"python3 {reqs.get('python3')!r}, setup.py >= {python_floor}"
    for requirement in metadata.get_all("Requires-Dist") or []:
        if ";" in requirement:  # extras (test) and environment markers are not runtime needs
            continue
        match = re.match(r"([A-Za-z0-9_.\-]+)\s*(?:\(?\s*>=\s*([^,\s)]+))?", requirement)
        dist, floor = match.group(1).lower(), match.group(2)
        rpm_name = RPM_NAMES.get(dist, "python3-" + re.sub(r"^python-", "", dist))
        assert rpm_name in reqs, f"setup.py requires {requirement!r} but the spec has no {rpm_name}"
        if floor:
            assert reqs[rpm_name] == f">= {floor}", f"{rpm_name}: spec {reqs[rpm_name]!r}, setup.py >= {floor}"


def test_changelog_has_this_version(artifacts):
    changelog = rpm_query(artifacts, "--changelog")
    first = changelog.splitlines()[0]
    assert first.startswith("* ")
    assert f" - {artifacts.version}-" in first, (
        f"the newest %changelog entry is not for {artifacts.version}: {first!r}"
    )


def test_launcher(rpm_payload, artifacts, tmp_path):
    launcher = rpm_payload / LAUNCHER.lstrip("/")
    text = launcher.read_text()
    assert text.startswith("#!/usr/bin/python3\n")
    assert f'"{PLUGIN_ROOT}"' in text
    assert "@PLUGIN_ROOT@" not in text and "@PYTHON3@" not in text
    env = clean_env(CLOUDMANAGERS_PLUGIN_DIR=str(rpm_payload / PLUGIN_ROOT.lstrip("/")))
    proc = run([sys.executable, str(launcher), "--version"], cwd=str(tmp_path), env=env)
    assert artifacts.version in proc.stdout
    proc = run([sys.executable, str(launcher), "--help"], cwd=str(tmp_path), env=env)
    assert "check-config" in proc.stdout


def test_plugin_from_rpm_loads_in_synapse(rpm_payload, tmp_path):
    conf = write_cloudmanagers_conf(tmp_path / "cloudmanagers.conf")
    report = load_like_synapse(
        tmp_path, rpm_payload / PLUGIN_ROOT.lstrip("/"), [READ_ALL], env={"CLOUDMANAGERS_CONF": str(conf)}
    )
    assert report["registered"] == ["cloudmanagers"]
    assert report["plugin_file"].startswith(str(rpm_payload))
    assert sorted(report["replies"][0]["status"]["cloudmanagers"]) == ["alpha", "beta"]


def test_sample_config_is_the_project_one(rpm_payload, artifacts):
    shipped = (rpm_payload / CONF.lstrip("/")).read_bytes()
    assert shipped == (artifacts.source / "etc" / "synapse" / "cloudmanagers.conf").read_bytes()


def test_unit_runs_something_the_rpm_provides(rpm_payload):
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(rpm_payload / UNIT_PATH.lstrip("/"))
    exec_start = unit.get("Service", "ExecStart").strip().lstrip("-@:+!")
    command = exec_start.split()[0]
    assert command.startswith("/"), f"ExecStart needs an absolute path: {exec_start!r}"
    if command == LAUNCHER:
        return
    # Anything else running the package must find it in the plugin folder.
    environment = " ".join(unit.get("Service", "Environment", fallback="").split())
    assert re.match(r"/usr/bin/python3(\.\d+)?$", command), f"ExecStart runs {command!r}, not shipped by the RPM"
    assert f"PYTHONPATH={PLUGIN_ROOT}" in environment, (
        f"ExecStart runs {exec_start!r}, but the RPM installs the package in {PLUGIN_ROOT}, "
        f"not in site-packages: set Environment=PYTHONPATH={PLUGIN_ROOT} or run {LAUNCHER}"
    )


def test_the_rpm_creates_the_user_the_unit_runs_as(rpm_payload, artifacts):
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(rpm_payload / UNIT_PATH.lstrip("/"))
    assert unit.get("Service", "User") == unit.get("Service", "Group") == AGENT_USER
    scripts = rpm_query(artifacts, "--scripts")
    preinstall = scripts.split("preinstall scriptlet")[1].split("scriptlet")[0]
    assert f"groupadd -r {AGENT_USER}" in preinstall and f"useradd -r -g {AGENT_USER}" in preinstall


def test_spec_requires_the_version_define(artifacts):
    """The spec refuses to build without the version from version.py (no stale default)."""
    need_tool("rpmbuild")
    spec = artifacts.source / "packaging" / "rpm" / f"{NAME}.spec"
    proc = subprocess.run(["rpmbuild", "--nodeps", "-bp", str(spec), "--define", "_topdir /nonexistent"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode != 0
    assert "cm_version" in proc.stdout
