"""The notification bus over TLS: verified against the section's bus CA (notifications_cacert,
oslo's ?ssl_ca_file=, else the section's cacert, else the system's CAs), never unverified."""

import logging
import ssl

import pytest

from cloudmanagers_plugin.agent.broker import explain_connection_failure, verifying_context
from cloudmanagers_plugin.agent.notifications import NotificationListener
from cloudmanagers_plugin.agent.settings import BrokerSettings
from cloudmanagers_plugin.config import ConfigFile
from cloudmanagers_plugin.errors import ConfigError
from cloudmanagers_plugin.transport_url import parse
from tests.support.controller import LEGACY_SECTION, write_config
from tests.support.pki import make_pki

BUS = "rabbits://nova:s3cret-pw@localhost:5671/openstack"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("other-pki"))


def handshake(client: ssl.SSLContext, pki, server_hostname: str = "localhost") -> None:
    """A TLS handshake in memory between ``client`` and a server presenting the pki's certificate."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.cert, pki.key)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname=server_hostname)
    server_to, server_from = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_end = server.wrap_bio(server_to, server_from, server_side=True)
    for _ in range(10):
        done = True
        for end, incoming, outgoing, write_to in ((client_end, to_client, to_server, server_to),
                                                  (server_end, server_to, server_from, to_client)):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                done = False
            data = outgoing.read()
            if data:
                write_to.write(data)
        if done:
            return
    raise AssertionError("the handshake did not end")


def test_the_context_verifies_against_the_given_ca_and_the_host_name(pki, other_pki):
    context = verifying_context(pki.ca, "[s] notifications_cacert")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    handshake(context, pki)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(verifying_context(other_pki.ca, "x"), pki)  # another CA
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(verifying_context(None, "x"), pki)  # the system's CAs do not know a private CA
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(verifying_context(pki.ca, "x"), pki, server_hostname="rabbit.example")


def test_a_missing_or_garbage_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[s\] notifications_cacert = .*none.pem: file not found"):
        verifying_context(str(tmp_path / "none.pem"), "[s] notifications_cacert")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load the TLS CA bundle"):
        verifying_context(str(bad), "[s] notifications_cacert")


def section(tmp_path, extra):
    return ConfigFile(write_config(tmp_path / "cloudmanagers.conf", LEGACY_SECTION + extra)).get("test_os")


def test_the_bus_ca_is_notifications_cacert_else_the_url_s_ssl_ca_file_else_cacert_else_the_system_s(
        tmp_path, pki, other_pki):
    assert section(tmp_path, f"notifications_url = {BUS}\n").notifications_url.ca_file is None
    assert section(tmp_path, f"notifications_url = {BUS}\ncacert = {other_pki.ca}\n"
                   ).notifications_url.ca_file == other_pki.ca
    assert section(tmp_path, f"notifications_url = {BUS}\ncacert = {other_pki.ca}\nnotifications_cacert = {pki.ca}\n"
                   ).notifications_url.ca_file == pki.ca
    assert section(tmp_path, f"notifications_url = {BUS}?ssl_ca_file={pki.ca}\ncacert = {other_pki.ca}\n"
                   ).notifications_url.ca_file == pki.ca
    assert parse(f"{BUS}?ssl_ca_file={pki.ca}", "k").masked == "rabbits://nova:***@localhost:5671/openstack"
    # a changed CA is a changed bus: the listener is replaced (NotificationService compares the buses)
    assert (section(tmp_path, f"notifications_url = {BUS}\nnotifications_cacert = {pki.ca}\n").notifications_url
            != section(tmp_path, f"notifications_url = {BUS}\nnotifications_cacert = {other_pki.ca}\n").notifications_url)


@pytest.mark.parametrize("extra,where", [
    ("notifications_cacert = {missing}\n", "key 'notifications_cacert': file {missing} does not exist"),
    ("notifications_url = " + BUS + "?ssl_ca_file={missing}\n",
     "key 'notifications_url': ssl_ca_file {missing} does not exist"),
    ("notifications_cacert = {ca}\nnotifications_url = " + BUS + "?ssl_ca_file={ca}\n", "not both"),
])
def test_a_missing_bus_ca_file_is_a_clear_config_error_without_the_password(tmp_path, pki, extra, where):
    missing = str(tmp_path / "missing.pem")
    text = extra.format(missing=missing, ca=pki.ca)
    if "notifications_url" not in text:
        text = f"notifications_url = {BUS}\n" + text
    with pytest.raises(ConfigError) as caught:
        section(tmp_path, text)
    assert where.format(missing=missing) in str(caught.value) and "s3cret" not in str(caught.value)


class Loop:
    """The IOLoop as a listener that fails before connecting uses it."""

    def __init__(self):
        self.later = []

    def call_later(self, delay, callback):
        self.later.append(delay)
        return object()


def listener(url):
    return NotificationListener("s", url, "nova", "q", Loop(), "name", lambda *_: None)


def test_the_listener_verifies_the_bus_against_its_ca(pki):
    options = listener(parse(f"{BUS}?ssl_ca_file={pki.ca}", "k"))._ssl_options("localhost")
    assert options.server_hostname == "localhost"
    assert options.context.verify_mode == ssl.CERT_REQUIRED and options.context.check_hostname
    handshake(options.context, pki)
    assert listener(parse(BUS.replace("rabbits", "rabbit"), "k"))._ssl_options("localhost") is None


def test_a_ca_file_gone_since_the_file_was_read_is_one_warning_and_a_retry(tmp_path, caplog):
    gone = listener(parse(f"{BUS}?ssl_ca_file={tmp_path / 'gone.pem'}", "k"))
    with caplog.at_level(logging.WARNING):
        gone.start()  # no exception escapes the loop
    assert gone._ioloop.later and "gone.pem: file not found" in caplog.text and "s3cret" not in caplog.text


def test_a_certificate_refused_says_so_and_names_the_option():
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate in certificate chain"
    failure = explain_connection_failure(error, BrokerSettings(use_ssl=True), ca_option="notifications_cacert")
    assert failure.reason == ("the broker's TLS certificate failed verification (self-signed certificate in "
                              "certificate chain); check notifications_cacert and the broker certificate")
