"""The driver's session: catalog endpoints looked up once per token, the environment once per session.

Counted with the faked cloud: how often the token's catalog is read, where each Nova request
goes, and which proxy a request is sent through.
"""

import os
import re

import pytest
import requests_mock
from keystoneauth1.access import service_catalog

from cloudmanagers_plugin import CloudmanagersController
from cloudmanagers_plugin.drivers.session import environment_ca_bundle, environment_per_request
from tests.support.controller import LEGACY_SECTION, write_config
from tests.support.fakecloud import NOVA, FakeCloud

# The same section without nova_base_url: every Nova endpoint comes from the catalog.
CATALOG_SECTION = LEGACY_SECTION.replace("nova_base_url = http://127.0.0.1:8774/v2/\n", "")
MOVED_NOVA = "http://127.0.0.2:8774/v2.1"
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def catalog_reads(monkeypatch):
    """How many times keystoneauth read a token's catalog (it copies the whole catalog each time)."""
    reads = []
    original = service_catalog.ServiceCatalog.normalize_catalog

    def counted(self):
        reads.append(1)
        return original(self)

    monkeypatch.setattr(service_catalog.ServiceCatalog, "normalize_catalog", counted)
    return reads


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """No proxy, CA bundle or netrc in the environment (a home folder without .netrc)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


def read(controller, vm="vm-1", cm_id="test_os"):
    reply = controller.process({"collection": "cloudmanagers", "action": "read", "id": cm_id,
                                "attributes": {"name": vm}, "filters": {}})
    assert "error" not in reply, reply["error"]
    return reply


def catalog_controller(tmp_path, section=CATALOG_SECTION):
    return CloudmanagersController(config_path=write_config(tmp_path / "cm.conf", section), agent_uuid="u")


def test_the_catalog_is_read_once_per_token(tmp_path, catalog_reads):
    with requests_mock.Mocker() as mocker:
        cloud = FakeCloud(mocker)
        cloud.add_server("vm-1")
        controller = catalog_controller(tmp_path)
        for _ in range(20):
            read(controller)
        assert cloud.tokens_issued == 1
        assert len(catalog_reads) == 1  # keystoneauth alone: one per Nova request
        assert sum(r.path.endswith("/servers/detail") for r in mocker.request_history) == 20


def test_a_new_token_looks_the_endpoint_up_again(tmp_path, catalog_reads):
    """Nova answers 401 once: keystoneauth gets a new token, whose catalog names another Nova."""
    with requests_mock.Mocker() as mocker:
        cloud = FakeCloud(mocker)
        cloud.add_server("vm-1")
        controller = catalog_controller(tmp_path)
        read(controller)
        moved = mocker.get(re.compile(rf"^{re.escape(MOVED_NOVA)}/servers/detail(\?.*)?$"), json=cloud._detail)
        cloud.catalog_urls["compute"] = MOVED_NOVA
        cloud.throttle("GET", rf"^{re.escape(NOVA)}/servers/detail(\?.*)?$", cloud._detail,
                       status=401, retry_after=None)
        read(controller)  # 401, new token, the same request again (to the endpoint it was sent to)
        assert cloud.tokens_issued == 2
        assert moved.call_count == 0
        for _ in range(3):
            read(controller)
        assert moved.call_count == 3  # the new token's catalog, looked up once
        assert len(catalog_reads) == 2


def test_an_endpoint_override_never_reads_the_catalog(tmp_path, catalog_reads):
    with requests_mock.Mocker() as mocker:
        cloud = FakeCloud(mocker)
        cloud.add_server("vm-1")
        controller = catalog_controller(tmp_path, LEGACY_SECTION)  # nova_base_url set
        for _ in range(5):
            read(controller)
        assert catalog_reads == []


def test_without_proxy_or_netrc_requests_is_not_asked_to_search_the_environment(clean_environment, monkeypatch):
    assert environment_per_request() is False
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    assert environment_per_request() is False  # a CA bundle does not depend on the host: read once
    assert environment_ca_bundle() == "/etc/ssl/bundle.pem"


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "http_proxy", "no_proxy", "ALL_PROXY"])
def test_a_proxy_variable_keeps_the_per_request_search(clean_environment, monkeypatch, name):
    monkeypatch.setenv(name, "http://proxy.example:3128")
    assert environment_per_request() is True


def test_a_netrc_file_keeps_the_per_request_search(clean_environment, tmp_path):
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login a password b\n")
    assert environment_per_request() is True


def test_the_session_reads_the_environment_once(clean_environment, monkeypatch, tmp_path):
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/curl.pem")
    with requests_mock.Mocker() as mocker:
        FakeCloud(mocker).add_server("vm-1")
        controller = catalog_controller(tmp_path, LEGACY_SECTION)
        read(controller)
        session = controller.driver("test_os")._session
        assert session.session.trust_env is False
        assert session.verify == "/etc/ssl/curl.pem"  # what requests would have taken per request
        assert mocker.request_history[-1].verify == "/etc/ssl/curl.pem"


def test_a_proxy_set_at_start_is_still_used(clean_environment, monkeypatch, tmp_path):
    """With a proxy in the environment requests keeps honouring it (and no_proxy) per request."""
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "127.0.0.2")
    with requests_mock.Mocker() as mocker:
        cloud = FakeCloud(mocker)
        cloud.add_server("vm-1")
        controller = catalog_controller(tmp_path, LEGACY_SECTION)
        read(controller)
        assert controller.driver("test_os")._session.session.trust_env is True
        nova = [r for r in mocker.request_history if r.port == 8774]
        assert nova and all(r.proxies.get("http") == "http://proxy.example:3128" for r in nova)
