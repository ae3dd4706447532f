"""Fixtures of the packaging tests: the artifacts are built once per session.

`make check-packaging` builds them in dist/ and passes that folder as CM_PACKAGING_DIST.
Without it, the session copies the working tree to a temporary folder (as a clean checkout
would be, without build outputs) and runs `make wheel rpm` there, so running the tests
never writes build outputs into the shared tree.
"""

import os

import pytest

from tests.support.packaging import REPO, Artifacts, build_artifacts, need_tool, unpack_rpm


def pytest_configure(config):
    config.addinivalue_line("markers", "packaging: builds the RPM, sdist and wheel and checks their contents")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    need_tool("make")
    prebuilt = os.environ.get("CM_PACKAGING_DIST")
    if prebuilt:
        return Artifacts(REPO, prebuilt)
    return build_artifacts(tmp_path_factory.mktemp("packaging"))


@pytest.fixture(scope="session")
def rpm_payload(artifacts, tmp_path_factory):
    """The RPM's files, unpacked under a temporary root."""
    return unpack_rpm(artifacts.rpm, tmp_path_factory.mktemp("rpmroot"))
