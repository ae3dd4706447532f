"""Fixtures for unit tests: a faked Keystone/Nova/Glance and a controller bound to it."""

import pytest
import requests_mock

from cloudmanagers_plugin import CloudmanagersController
from tests.support.controller import LEGACY_SECTION, write_config
from tests.support.fakecloud import FakeCloud


@pytest.fixture
def conf_path(tmp_path):
    return write_config(tmp_path / "cloudmanagers.conf", "[general]\nanything = 1\n" + LEGACY_SECTION)


@pytest.fixture
def cloud():
    with requests_mock.Mocker() as mocker:
        yield FakeCloud(mocker)


@pytest.fixture
def controller(conf_path, cloud):
    return CloudmanagersController(config_path=conf_path, agent_uuid="3a468145-1afc-40d3-baf5-3ba4c0fc3561")


@pytest.fixture
def call(controller):
    """call(action, cm_id, **attributes) -> the full reply dict."""

    def run(action, cm_id="test_os", **attributes):
        return controller.process(
            {"collection": "cloudmanagers", "action": action, "id": cm_id, "attributes": attributes, "filters": {}}
        )

    return run
