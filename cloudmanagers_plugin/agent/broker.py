"""pika connection parameters built from ``BrokerSettings``, with TLS that always verifies.

The legacy agent ran ``use_ssl`` without certificate verification unless ``ssl_auth`` was on,
and MCollective's ``ssl.fallback`` silently downgraded to an unverified connection; here TLS
always verifies the broker against ``cacertfile`` and a missing file stops the start-up.
"""

import os
import ssl
from typing import Optional

import pika
from pika.credentials import ExternalCredentials, PlainCredentials

from ..errors import ConfigError
from .settings import BrokerSettings


def _require_file(path: str, option: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"[rabbitmq] {option} = {path}: file not found")


def tls_context(broker: BrokerSettings) -> ssl.SSLContext:
    """A client context that verifies the broker (and presents our certificate with ssl_auth)."""
    _require_file(broker.cacertfile, "cacertfile")
    try:
        context = ssl.create_default_context(cafile=broker.cacertfile)
        if broker.ssl_auth:
            _require_file(broker.certfile, "certfile")
            _require_file(broker.keyfile, "keyfile")
            context.load_cert_chain(broker.certfile, broker.keyfile)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"cannot load the TLS files: {err}") from None
    return context


def connection_parameters(broker: BrokerSettings, connection_name: str) -> pika.ConnectionParameters:
    """Parameters for one connection attempt; retries are the caller's job (with back-off)."""
    if broker.ssl_auth and not broker.use_ssl:
        raise ConfigError("[rabbitmq] ssl_auth = true needs use_ssl = true (client certificates need TLS)")
    ssl_options = pika.SSLOptions(tls_context(broker), broker.host) if broker.use_ssl else None
    credentials = (
        ExternalCredentials() if broker.ssl_auth else PlainCredentials(broker.username, broker.password)
    )
    return pika.ConnectionParameters(
        host=broker.host,
        port=broker.effective_port,
        virtual_host=broker.vhost,
        credentials=credentials,
        ssl_options=ssl_options,
        heartbeat=broker.heartbeat,
        connection_attempts=1,
        client_properties={"connection_name": connection_name},
    )


def login_user_id(broker: BrokerSettings) -> Optional[str]:
    """The ``user_id`` to stamp on published messages, or None to leave it out.

    RabbitMQ closes the channel when ``user_id`` differs from the authenticated user. With SASL
    EXTERNAL that user is derived by the broker from the client certificate (CN or full DN,
    depending on ``ssl_cert_login_from``), which the agent cannot know for sure, so it is omitted.
    """
    return None if broker.ssl_auth else broker.username
