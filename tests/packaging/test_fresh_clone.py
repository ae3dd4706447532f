"""`make rpm`, `make sdist` and `make wheel` in a fresh clone: each target makes what it needs
(the venv with `build`; rpmbuild if it is missing) instead of asking for `make build-deps`."""

import os
import shutil
import tarfile

import pytest

from tests.support.packaging import NAME, NOT_SOURCE, REPO, WHEEL_NAME, clean_env, need_tool, project_version, run

pytestmark = pytest.mark.packaging


def test_targets_build_what_they_need(tmp_path):
    need_tool("make")
    if shutil.which("rpmbuild") is None and not os.environ.get("CI"):
        pytest.skip("rpmbuild is not installed; `make rpm` installs it as root (under CI this test does it)")
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=NOT_SOURCE, symlinks=True)
    assert not (clone / ".venv").exists()
    version = project_version(clone)
    make = ["make", "-C", clone, f"RPMTOP={tmp_path / 'rpmbuild'}"]   # the default PYTHON: the clone's venv

    run([*make, "rpm"], env=clean_env(), timeout=900)
    dist = clone / "dist"
    assert [p.name for p in dist.glob(f"{NAME}-{version}-*.noarch.rpm")], sorted(p.name for p in dist.iterdir())
    assert (clone / ".venv" / "bin" / "python").exists()

    shutil.rmtree(dist)
    run([*make, "wheel"], env=clean_env(), timeout=600)
    assert [p.name for p in dist.glob(f"{WHEEL_NAME}-{version}-py3-none-any.whl")]
    sdists = list(dist.glob("*.tar.gz"))
    assert len(sdists) == 1 and tarfile.is_tarfile(sdists[0])
