"""Helpers of the packaging tests (constants, running commands, the built artifacts, and
loading a plugin folder the way the synapse agent does)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAME = "synapse-cloudmanagers-plugin"
WHEEL_NAME = NAME.replace("-", "_")
PACKAGE = "cloudmanagers_plugin"
PLUGIN_ROOT = "/var/lib/synapse/custom_plugin"
UNIT = "cloudmanagers-agent.service"
DATA_DIR = "share/" + NAME
STUB = REPO / "tests" / "packaging" / "synapse_agent_stub"

# What a clean checkout does not have.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "dist", "build", "*.egg-info", "__pycache__", "*.py[co]", ".venv", ".pytest_cache", ".devcloud"
)

READ_ALL = {"collection": "cloudmanagers", "filters": {}, "action": "read", "attributes": {}, "id": "",
            "monitor": False}


def project_version(root=REPO):
    text = (Path(root) / PACKAGE / "version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def package_source_files(root=REPO):
    """The files of the plugin package in a source tree, relative to the package folder."""
    base = Path(root) / PACKAGE
    found = set()
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo"):
            found.add(rel.as_posix())
    return found


def need_tool(name):
    """Skip when a build tool is missing, but fail under CI, where a skip would hide it."""
    if shutil.which(name) is None:
        message = f"{name} is not installed (run `make build-deps`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def need_module(name):
    """The same for a Python module of the test interpreter."""
    try:
        __import__(name)
    except ImportError:
        message = f"python module {name} is not installed (run `make build-deps`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def run(cmd, **kwargs):
    """Run a command; on failure, fail the test with its output."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.STDOUT)
    kwargs.setdefault("text", True)
    proc = subprocess.run([str(c) for c in cmd], **kwargs)
    if proc.returncode != 0:
        output = proc.stdout if isinstance(proc.stdout, str) else ""
        if isinstance(proc.stderr, str):
            output += proc.stderr
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{output}")
    return proc


def clean_env(**extra):
    """The environment without PYTHON* variables, so nothing but what a test sets is imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


class Artifacts:
    """The sdist, wheel, RPM and SRPM in `dist`, built from the source tree `source`.

    rpm_error holds the output of a failed `make rpm`: only the RPM tests fail with it.
    """

    def __init__(self, source, dist, rpm_error=None):
        self.source = Path(source)
        self.dist = Path(dist)
        self.version = project_version(self.source)
        self.rpm_error = rpm_error

    def _one(self, *patterns):
        found = sorted({p for pattern in patterns for p in self.dist.glob(pattern)})
        if len(found) != 1:
            pytest.fail(f"expected one of {patterns} in {self.dist}, found {[p.name for p in found]}")
        return found[0]

    @property
    def sdist(self):
        v = self.version
        return self._one(f"{NAME}-{v}.tar.gz", f"{WHEEL_NAME}-{v}.tar.gz")

    @property
    def wheel(self):
        return self._one(f"{WHEEL_NAME}-{self.version}-py3-none-any.whl")

    @property
    def rpm(self):
        need_tool("rpmbuild")
        if self.rpm_error:
            pytest.fail(self.rpm_error)
        return self._one(f"{NAME}-{self.version}-*.noarch.rpm")

    @property
    def srpm(self):
        need_tool("rpmbuild")
        if self.rpm_error:
            pytest.fail(self.rpm_error)
        return self._one(f"{NAME}-{self.version}-*.src.rpm")

    def sdist_names(self):
        """The sdist's files, relative to its top folder."""
        with tarfile.open(self.sdist) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
        top = {n.split("/", 1)[0] for n in names}
        assert len(top) == 1, f"the sdist has several top folders: {top}"
        return {n.split("/", 1)[1] for n in names}

    def wheel_names(self):
        with zipfile.ZipFile(self.wheel) as whl:
            return set(whl.namelist())


def build_artifacts(work):
    """Copy the working tree to work/src and run `make wheel`, then `make rpm`, there."""
    source = Path(work) / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE, symlinks=True)
    dist = Path(work) / "dist"
    make = ["make", "-C", source, f"PYTHON={sys.executable}", f"DIST={dist}", f"RPMTOP={Path(work) / 'rpmbuild'}"]
    run([*make, "wheel"], timeout=600)
    rpm_error = None
    if shutil.which("rpmbuild"):  # else the RPM tests skip, or fail under CI
        proc = subprocess.run([str(c) for c in make + ["rpm"]], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
        if proc.returncode != 0:
            rpm_error = f"make rpm exited {proc.returncode}:\n{proc.stdout[-6000:]}"
    return Artifacts(source, dist, rpm_error)


def unpack_rpm(rpm, root):
    """Unpack an RPM's payload under root, as `rpm -i` would under /."""
    need_tool("rpm2archive")
    archive = Path(root) / "payload.tar.gz"
    with open(rpm, "rb") as src, open(archive, "wb") as out:
        run(["rpm2archive", "-"], stdin=src, stdout=out, text=False)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(root, filter="tar")
        else:  # Python < 3.11.4
            tar.extractall(root)
    archive.unlink()
    return Path(root)


def write_cloudmanagers_conf(path, sections=("alpha", "beta")):
    """A cloud managers file with the given sections; its addresses are never contacted."""
    blocks = []
    for index, name in enumerate(sections):
        blocks.append(
            f"[{name}]\n"
            "cm_type = openstack\n"
            "url = http://127.0.0.1:9\n"
            "keystone_base_url = http://127.0.0.1:9/identity/v3\n"
            "nova_base_url = http://127.0.0.1:9/compute/v2.1\n"
            f"tenant_name = project{index}\n"
            f"username = user{index}\n"
            "password = not-a-secret\n"
        )
    path = Path(path)
    path.write_text("\n".join(blocks))
    path.chmod(0o600)
    return path


def load_like_synapse(tmp_path, plugin_root, requests, key="custom_plugins", env=None, missing=()):
    """Load plugin_root's plugins with the stand-in synapse agent, in a subprocess.

    The stand-in `synapse` package is copied to tmp_path/agent and is the only thing on
    PYTHONPATH, after a folder that makes each module of ``missing`` fail to import as an absent
    library does. Returns the loader's JSON report: the registered collections and the replies.
    """
    tmp_path = Path(tmp_path)
    stub = tmp_path / "agent"
    shutil.copytree(STUB, stub, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    blocked = tmp_path / "missing-libraries"
    blocked.mkdir(exist_ok=True)
    for module in missing:
        (blocked / f"{module}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n"
        )
    persistence = tmp_path / "persistence"
    persistence.mkdir(exist_ok=True)
    conf = tmp_path / "synapse-agent.conf"
    conf.write_text(f"[controller]\n{key} = {plugin_root}\npersistence_path = {persistence}\n")
    proc = run(
        [sys.executable, stub / "load_plugins.py", conf, "cloudmanagers", json.dumps(requests)],
        cwd=str(tmp_path), env=clean_env(PYTHONPATH=os.pathsep.join([str(blocked), str(stub)]), **(env or {})),
        stderr=subprocess.PIPE, timeout=120,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])
