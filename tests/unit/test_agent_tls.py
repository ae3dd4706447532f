"""TLS options: verified against cacertfile, client certificate + SASL EXTERNAL with ssl_auth."""

import shutil
import ssl
import subprocess

import pytest
from pika.credentials import ExternalCredentials, PlainCredentials

from cloudmanagers_plugin.agent.broker import connection_parameters, login_user_id
from cloudmanagers_plugin.agent.settings import BrokerSettings
from cloudmanagers_plugin.errors import ConfigError


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("pki")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=agent-test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def tls_broker(pki, **overrides):
    cert, key = pki
    broker = BrokerSettings(host="rabbit.example", use_ssl=True, cacertfile=cert, certfile=cert, keyfile=key)
    for name, value in overrides.items():
        setattr(broker, name, value)
    return broker


def test_plain_connection_uses_login_and_port():
    [params] = connection_parameters(BrokerSettings(username="u", password="p", heartbeat=7), "n")
    assert params.ssl_options is None and params.port == 5672 and params.heartbeat == 7
    assert isinstance(params.credentials, PlainCredentials) and params.credentials.username == "u"
    assert params.client_properties["connection_name"] == "n"
    assert login_user_id(BrokerSettings(username="u")) == "u"


def test_use_ssl_verifies_the_broker(pki):
    [params] = connection_parameters(tls_broker(pki), "n")
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert params.ssl_options.server_hostname == "rabbit.example"
    assert params.port == 5671
    assert isinstance(params.credentials, PlainCredentials)


def test_ssl_auth_adds_client_certificate_and_external(pki):
    broker = tls_broker(pki, ssl_auth=True)
    [params] = connection_parameters(broker, "n")
    assert isinstance(params.credentials, ExternalCredentials)
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert login_user_id(broker) is None  # the broker derives the user from the certificate


def test_missing_ca_file_is_an_error_not_a_fallback(pki, tmp_path):
    with pytest.raises(ConfigError, match="cacertfile"):
        connection_parameters(tls_broker(pki, cacertfile=str(tmp_path / "none.pem")), "n")


def test_missing_client_key_is_an_error(pki, tmp_path):
    with pytest.raises(ConfigError, match="keyfile"):
        connection_parameters(tls_broker(pki, ssl_auth=True, keyfile=str(tmp_path / "none.pem")), "n")


def test_garbage_ca_file_is_an_error(pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="TLS"):
        connection_parameters(tls_broker(pki, cacertfile=str(bad)), "n")


def test_ssl_auth_without_tls_is_an_error(pki):
    with pytest.raises(ConfigError, match="use_ssl"):
        connection_parameters(tls_broker(pki, use_ssl=False, ssl_auth=True), "n")
