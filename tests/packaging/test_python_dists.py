"""The sdist and the wheel: their contents, their metadata (twine check), and `pip install .`."""

import json
import shutil
import subprocess
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

from tests.support.packaging import (
    DATA_DIR, NAME, NOT_SOURCE, PACKAGE, UNIT, WHEEL_NAME, clean_env, need_module, package_source_files, run,
)

pytestmark = pytest.mark.packaging

SDIST_MUST_HOLD = {
    "PKG-INFO", "setup.py", "README.md", "LICENSE", "MANIFEST.in", "Makefile",
    "etc/synapse/cloudmanagers.conf",
    "etc/synapse-agent/synapse-agent.conf",
    "etc/synapse-agent/permissions.conf",
    f"packaging/rpm/{NAME}.spec",
    "packaging/rpm/cloudmanagers-launcher",
    "packaging/install-dropin.sh",
    f"packaging/systemd/{UNIT}",
}
# The wheel's data files (setup.py data_files) and where they come from in the source tree.
DATA_FILES = {
    "cloudmanagers.conf": "etc/synapse/cloudmanagers.conf",
    "synapse-agent.conf": "etc/synapse-agent/synapse-agent.conf",
    "permissions.conf": "etc/synapse-agent/permissions.conf",
    UNIT: f"packaging/systemd/{UNIT}",
}


def _is_bytecode(name):
    return "__pycache__" in name or name.endswith((".pyc", ".pyo"))


def test_sdist_contents(artifacts):
    names = artifacts.sdist_names()
    missing = SDIST_MUST_HOLD - names
    assert not missing, f"the sdist lacks {sorted(missing)} (MANIFEST.in)"
    package = {n[len(PACKAGE) + 1:] for n in names if n.startswith(PACKAGE + "/")}
    assert package == package_source_files(artifacts.source)
    assert not [n for n in names if _is_bytecode(n)]
    assert not [n for n in names if n.split("/")[0] in (".git", "dist", "build", ".ci", ".devcloud")]


def test_wheel_contents(artifacts):
    names = artifacts.wheel_names()
    v = artifacts.version
    info = f"{WHEEL_NAME}-{v}.dist-info/"
    data = f"{WHEEL_NAME}-{v}.data/data/{DATA_DIR}/"
    package = {n[len(PACKAGE) + 1:] for n in names if n.startswith(PACKAGE + "/")}
    assert package == package_source_files(artifacts.source), "the wheel must carry the whole package"
    assert {n[len(data):] for n in names if n.startswith(data)} == set(DATA_FILES), (
        f"the wheel must carry {sorted(DATA_FILES)} under {DATA_DIR} (setup.py data_files)"
    )
    assert {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt"} <= {
        n[len(info):] for n in names if n.startswith(info)
    }
    others = {n for n in names if not n.startswith((PACKAGE + "/", info, data))}
    assert others == set(), f"unexpected files in the wheel: {sorted(others)}"
    assert not [n for n in names if _is_bytecode(n)]


def test_wheel_data_files_are_the_project_files(artifacts):
    data = f"{WHEEL_NAME}-{artifacts.version}.data/data/{DATA_DIR}/"
    with zipfile.ZipFile(artifacts.wheel) as whl:
        for name, source in DATA_FILES.items():
            assert whl.read(data + name) == (artifacts.source / source).read_bytes(), name


def test_wheel_metadata(artifacts):
    info = f"{WHEEL_NAME}-{artifacts.version}.dist-info/"
    with zipfile.ZipFile(artifacts.wheel) as whl:
        metadata = HeaderParser().parsestr(whl.read(info + "METADATA").decode())
        entry_points = whl.read(info + "entry_points.txt").decode()
    assert metadata["Name"] == NAME
    assert metadata["Version"] == artifacts.version
    assert metadata["Description-Content-Type"] == "text/markdown"
    requires = {r.split(";")[0].split(">")[0].split("=")[0].strip().lower()
                for r in metadata.get_all("Requires-Dist") if "extra ==" not in r}
    assert {"python-novaclient", "python-keystoneclient", "keystoneauth1", "pika", "pyyaml",
            "prometheus-client"} <= requires
    assert "cloudmanagers = cloudmanagers_plugin.cli:main" in entry_points


def test_twine_check(artifacts):
    need_module("twine")
    proc = run([sys.executable, "-m", "twine", "check", "--strict", artifacts.sdist, artifacts.wheel])
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def _can_build_without_isolation(python):
    """setuptools builds wheels on its own from 70.1; older ones need the wheel package."""
    probe = (
        "import setuptools, sys\n"
        "major, minor = (int(x) for x in setuptools.__version__.split('.')[:2])\n"
        "if (major, minor) < (70, 1):\n"
        "    import wheel\n"
    )
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def _site_packages(python):
    """The purelib and platlib folders of an interpreter's environment."""
    code = "import json, sysconfig; p = sysconfig.get_paths(); print(json.dumps(sorted({p['purelib'], p['platlib']})))"
    return json.loads(run([python, "-c", code], env=clean_env()).stdout)


def test_pip_install_source_tree(artifacts, tmp_path):
    """`pip install .` in a new virtualenv. Its dependencies come from the test runner's own
    environment (what `make venv` installed from setup.py), added through a .pth file once the
    plugin is installed, never from whatever the machine's base Python happens to hold;
    `make check-pip` does the complete install from the package index in a clean virtualenv."""
    source = tmp_path / "src"   # pip builds in the tree: keep its build outputs out of ours
    shutil.copytree(artifacts.source, source, ignore=NOT_SOURCE)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    if _can_build_without_isolation(python):
        pip.append("--no-build-isolation")
    run([*pip, source], env=clean_env(), timeout=300)
    venv_site = _site_packages(python)[0]
    # Plain folder lines: the runner's own .pth files (its editable install of this tree) stay unread.
    (Path(venv_site) / "test-runner-dependencies.pth").write_text("\n".join(_site_packages(sys.executable)) + "\n")

    probe = "import json, cloudmanagers_plugin as p; print(json.dumps([p.__file__, p.__version__]))"
    path, version = json.loads(run([python, "-c", probe], cwd=str(tmp_path), env=clean_env()).stdout)
    assert path.startswith(str(venv)) and "site-packages" in path
    assert version == artifacts.version
    out = run([venv / "bin" / "cloudmanagers", "--version"], cwd=str(tmp_path), env=clean_env()).stdout
    assert artifacts.version in out
    for name in DATA_FILES:
        assert (venv / DATA_DIR / name).is_file(), f"{name} is not in {venv / DATA_DIR}"
    installed = {p.relative_to(venv).as_posix() for p in venv.rglob("*") if p.is_file()}
    assert not [p for p in installed if "/site-packages/tests/" in p], "tests must not be installed"
