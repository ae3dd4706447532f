"""pika connection parameters built from ``BrokerSettings``, with TLS that always verifies.

The legacy agent ran ``use_ssl`` without certificate verification unless ``ssl_auth`` was on,
and MCollective's ``ssl.fallback`` silently downgraded to an unverified connection; here TLS
always verifies the broker against ``cacertfile`` and a missing file stops the start-up.
"""

import os
import socket
import ssl
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import pika
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed, AMQPConnectorException
from pika.credentials import ExternalCredentials, PlainCredentials

from ..errors import ConfigError
from .settings import BrokerSettings


def _require_file(path: str, option: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"{option} = {path}: file not found")


def verifying_context(cafile: Optional[str], option: str) -> ssl.SSLContext:
    """A client context that verifies the peer's certificate and host name (CERT_REQUIRED,
    check_hostname) against the CA bundle ``cafile``, or the system's CAs when None.

    ``option`` names where ``cafile`` came from (``[rabbitmq] cacertfile``...) for the ConfigError
    of a missing or unreadable file: there is no unverified fallback.
    """
    if cafile is not None:
        _require_file(cafile, option)
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"{option} = {cafile}: cannot load the TLS CA bundle: {err}") from None


def tls_context(broker: BrokerSettings) -> ssl.SSLContext:
    """A client context that verifies the broker (and presents our certificate with ssl_auth)."""
    context = verifying_context(broker.cacertfile, "[rabbitmq] cacertfile")
    try:
        if broker.ssl_auth:
            _require_file(broker.certfile, "[rabbitmq] certfile")
            _require_file(broker.keyfile, "[rabbitmq] keyfile")
            context.load_cert_chain(broker.certfile, broker.keyfile)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"cannot load the TLS files: {err}") from None
    return context


def connection_parameters(broker: BrokerSettings, connection_name: str) -> List[pika.ConnectionParameters]:
    """Parameters for one connection attempt per broker node, in the configured order.

    Retries and the turn to the next node are the caller's job (with back-off); the heartbeat
    is what tells a dead or frozen node from a quiet one.
    """
    if broker.ssl_auth and not broker.use_ssl:
        raise ConfigError("[rabbitmq] ssl_auth = true needs use_ssl = true (client certificates need TLS)")
    context = tls_context(broker) if broker.use_ssl else None
    credentials = (
        ExternalCredentials() if broker.ssl_auth else PlainCredentials(broker.username, broker.password)
    )
    return [
        pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=broker.vhost,
            credentials=credentials,
            ssl_options=pika.SSLOptions(context, host) if context else None,
            heartbeat=broker.heartbeat,
            connection_attempts=1,
            client_properties={"connection_name": connection_name},
        )
        for host, port in broker.endpoints
    ]


def login_user_id(broker: BrokerSettings) -> Optional[str]:
    """The ``user_id`` to stamp on published messages, or None to leave it out.

    RabbitMQ closes the channel when ``user_id`` differs from the authenticated user. With SASL
    EXTERNAL that user is derived by the broker from the client certificate (CN or full DN,
    depending on ``ssl_cert_login_from``), which the agent cannot know for sure, so it is omitted.
    """
    return None if broker.ssl_auth else broker.username


class Failure(NamedTuple):
    """Why a connection attempt failed, in words; ``permanent`` when retrying cannot help."""

    reason: str
    permanent: bool


def _root_cause(error: BaseException) -> BaseException:
    """Unwrap pika's connection-workflow layers down to the error that happened."""
    for _ in range(10):
        if isinstance(error, AMQPConnectionWorkflowFailed) and error.exceptions:
            error = error.exceptions[-1]
        elif isinstance(error, AMQPConnectorException) and isinstance(getattr(error, "exception", None), BaseException):
            error = error.exception
        elif isinstance(error, pika.exceptions.AMQPConnectionError) and error.args and isinstance(
            error.args[0], BaseException
        ):
            error = error.args[0]
        else:
            break
    return error


def _broker_text(error: BaseException) -> str:
    """The broker's own words inside pika's 'Probable...Error' wrappers."""
    text = str(error.args[0]) if error.args else ""
    return text.replace("ConnectionClosedByBroker: ", "") or type(error).__name__


def explain_connection_failure(
    error: Optional[BaseException], broker: BrokerSettings, endpoint: Optional[Tuple[str, int]] = None,
    ca_option: str = "cacertfile", options: str = "[rabbitmq]",
) -> Failure:
    """What went wrong while connecting to the broker, and whether it can fix itself.

    pika wraps the cause in several layers whose text is empty or a wall of class names; this
    finds the cause and says it the way an operator needs it. A refused login or vhost is
    permanent (waiting will not change a password); a refused port or an unknown host is not
    (the broker or the DNS may come back). ``endpoint``: the node that failed, when known;
    ``ca_option``: the option that names the CA bundle the broker's certificate is checked against;
    ``options``: where the login, vhost and host came from (a notification bus: its URL).
    """
    cause = _root_cause(error) if error is not None else None
    host, port = endpoint or (broker.host, broker.effective_port)
    if isinstance(cause, pika.exceptions.ProbableAuthenticationError):
        who = "the client certificate" if broker.ssl_auth else f"user '{broker.username}'"
        return Failure(f"the broker refused the login of {who}: {_broker_text(cause)}; "
                       f"check {options} username and password", True)
    if isinstance(cause, pika.exceptions.ProbableAccessDeniedError):
        return Failure(f"the broker denied access to vhost '{broker.vhost}': {_broker_text(cause)}; "
                       f"check {options} vhost and the user's permissions on it", True)
    if isinstance(cause, pika.exceptions.AuthenticationError):
        return Failure(f"the broker offers no usable login mechanism ({cause}); check ssl_auth", True)
    if isinstance(cause, socket.gaierror):
        return Failure(f"cannot resolve the broker host '{host}' ({cause.strerror}); check {options} host",
                       False)
    if isinstance(cause, ConnectionRefusedError):
        return Failure(f"connection refused on port {port}: is RabbitMQ running and listening there?",
                       False)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return Failure(f"the broker's TLS certificate failed verification ({cause.verify_message}); "
                       f"check {ca_option} and the broker certificate", False)
    if isinstance(cause, ssl.SSLError):
        return Failure(f"TLS handshake failed ({cause.reason or cause}); check {ca_option} and the broker certificate",
                       False)
    if isinstance(cause, OSError) and cause.strerror:
        return Failure(cause.strerror, False)
    if isinstance(cause, (pika.exceptions.AMQPHeartbeatTimeout, TimeoutError, socket.timeout)):
        return Failure("no answer from the broker in time", False)
    text = str(cause).strip() if cause is not None else ""
    return Failure(text or (type(cause).__name__ if cause is not None else "connection closed"), False)


class CoalescingConnection(pika.SelectConnection):
    """A ``SelectConnection`` that hands the transport one write per IOLoop turn.

    pika queues every frame as a buffer of its own and sends each with a system call of its
    own: a reply is three (method, header, body), an ack one more. The agent's one I/O thread
    reads every request too, and each system call lets a worker take the interpreter lock
    from it. So the frames emitted during one loop turn, by every reply and ack of that turn,
    are joined and written at its end: the same bytes in the same order, in one send.

    ``at_turn_end`` runs a callback at that point, just before the write, so that what it
    emits (the acks of the turn) goes out in the same write instead of a turn later.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outgoing: List[bytes] = []
        self._turn_end: List[Callable[[], None]] = []
        self._scheduled = False
        super().__init__(*args, **kwargs)

    def at_turn_end(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at the end of this loop turn, before the turn's frames are written."""
        self._turn_end.append(callback)
        self._schedule()

    def _adapter_emit_data(self, data: bytes) -> None:
        self._outgoing.append(data)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._adapter_call_later(0, self._end_turn)

    def _end_turn(self) -> None:
        while self._turn_end:
            callbacks, self._turn_end = self._turn_end, []
            for callback in callbacks:
                callback()
        self._scheduled = False
        data, self._outgoing = b"".join(self._outgoing), []
        if data and self._transport is not None:
            super()._adapter_emit_data(data)
