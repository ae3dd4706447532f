"""Agent settings, read from the legacy ``synapse-agent.conf`` format.

Existing installations already have ``/etc/synapse-agent/synapse-agent.conf``; reading its
``[rabbitmq]`` section with the legacy keys and defaults lets the agent replace the old one in
place. The agent's own options live in ``[agent]`` (and the change events' in ``[events]``) so the
legacy sections keep their meaning.
Keys of the legacy file that the agent does not use (``status_exchange``, ``poller_delay``...)
are ignored, as the legacy agent ignored most of them; any other key is probably a typo and is
logged as a warning.

The uuid names the agent's queue. The legacy agent drew a new one at every start when none was
configured, so each restart consumed from a fresh queue and requests sent to the old one were
lost; here a generated uuid is written to a state file once and read back afterwards.
"""

import argparse
import configparser
import dataclasses
import logging
import os
import tempfile
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from ..errors import ConfigError
from ..transport_url import host_port, parse_hosts
from ..values import parse_bool
from .admission import legacy_zone

LOG = logging.getLogger(__name__)

DEFAULT_AGENT_CONFIG = "/etc/synapse-agent/synapse-agent.conf"
QUEUE_TYPES = ("classic", "quorum")
SINGLE_ACTIVE, COMPETING = "single-active", "competing"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_METRICS_LISTEN = "127.0.0.1:9465"
METRICS_OPTION = "[agent] metrics_listen (--metrics-listen)"
# Keys the legacy synapse agent reads from the same file: present in existing files, unused here.
LEGACY_KEYS = {
    "rabbitmq": {"csrfile", "fail_if_no_peer_cert", "status_exchange", "reply_exchange", "status_routing_key",
                 "compliance_routing_key", "redelivery_timeout", "poller_delay"},
    "log": {"logger_conf", "path", "pika_log_path"},
    "compliance": {"enable_compliance", "default_interval"},
}


def _option(default: Any, section: str = "rabbitmq", key: str = "", **kwargs: Any) -> Any:
    """A dataclass field that remembers which ``[section] key`` of the file it comes from."""
    return field(default=default, metadata={"section": section, "key": key}, **kwargs)


@dataclass
class BrokerSettings:
    """How to reach and log in to RabbitMQ (shared by the agent and ``cloudmanagers call``)."""

    host: str = _option("localhost")
    port: int = _option(5672)
    ssl_port: int = _option(5671)
    vhost: str = _option("/")
    username: str = _option("guest")
    password: str = _option("guest", repr=False)
    use_ssl: bool = _option(False)
    ssl_auth: bool = _option(False)
    cacertfile: str = _option("/etc/synapse-agent/ssl/certs/cacert.pem")
    certfile: str = _option("/etc/synapse-agent/ssl/certs/cert.pem")
    keyfile: str = _option("/etc/synapse-agent/ssl/private/key.pem")
    heartbeat: int = _option(30)
    retry_delay: float = _option(5.0)
    connection_attempts: int = _option(5000)

    @property
    def effective_port(self) -> int:
        """The port actually dialled: ``ssl_port`` when TLS is on, as the legacy agent did."""
        return self.ssl_port if self.use_ssl else self.port

    @property
    def endpoints(self) -> List[Tuple[str, int]]:
        """The broker nodes to try, in order: ``host`` holds one or several ``host[:port]``."""
        return parse_hosts(self.host, self.effective_port)

    def describe(self, endpoint: Optional[Tuple[str, int]] = None) -> str:
        """A URL for log lines (one node, else every node): it never contains the password."""
        scheme = "amqps" if self.use_ssl else "amqp"
        user = "" if self.ssl_auth else f"{urllib.parse.quote(self.username, safe='')}@"
        vhost = urllib.parse.quote(self.vhost, safe="")
        nodes = [endpoint] if endpoint else self.endpoints
        return f"{scheme}://{user}{','.join(host_port(*node) for node in nodes)}/{vhost}"


@dataclass
class AgentSettings:
    """What the agent consumes, where it answers, and how it runs requests."""

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    uuid: str = _option("")
    exchange: str = _option("amq.fanout")
    publish_exchange: str = _option("inbox")
    publish_routing_key: str = _option("")
    workers: int = _option(8, "agent")
    max_request_age: float = _option(300.0, "agent")
    legacy_timestamp_zone: str = _option("", "agent")
    declare: bool = _option(True, "agent")
    permissions: str = _option("", "agent")
    uuid_file: str = _option("/var/lib/synapse-agent/cloudmanagers-agent.uuid", "agent")
    reply_cache_size: int = _option(1024, "agent")
    queue_expires: float = _option(0.0, "agent")
    reply_cache_bytes: int = _option(16 * 1024 * 1024, "agent")
    reply_exchanges: str = _option("", "agent")
    max_message_bytes: int = _option(1024 * 1024, "agent")
    metrics_listen: str = _option(DEFAULT_METRICS_LISTEN, "agent")
    queue_type: str = _option("classic", "agent")
    delivery_limit: int = _option(5, "agent")
    consumers: str = _option("", "agent")
    # synapse's own key: a monitored VM that stays drifted is reported again at most this often
    alert_interval: float = _option(3600.0, "compliance")
    state_dir: str = _option("/var/lib/synapse-agent", "agent")
    events_enabled: bool = _option(True, "events", key="enabled")
    poll_interval: float = _option(10.0, "events")
    reconcile_interval: float = _option(1800.0, "events")
    events_exchange: Optional[str] = _option(None, "events", key="exchange")
    events_routing_key: str = _option("", "events", key="routing_key")
    log_level: str = _option("INFO", "log", key="level")
    library_log_level: str = _option("INFO", "log", key="libraries")

    @property
    def metrics_address(self) -> Optional[Tuple[str, int]]:
        """Where ``/metrics`` and ``/healthz`` listen, or None when ``metrics_listen`` is empty."""
        return parse_listen(self.metrics_listen)

    @property
    def allowed_reply_exchanges(self) -> FrozenSet[str]:
        """``[agent] reply_exchanges`` (comma or space separated) as a set of names."""
        return frozenset(self.reply_exchanges.replace(",", " ").split())

    @property
    def single_active(self) -> bool:
        """One agent of a group works, the others stand by (RabbitMQ's single active consumer).

        The default for a quorum queue (the group's queue); a classic queue keeps what earlier
        versions declared (no such argument: the broker refuses to redeclare a queue with other
        arguments) unless ``consumers = single-active`` is set.
        """
        if self.consumers:
            return self.consumers == SINGLE_ACTIVE
        return self.queue_type == "quorum"

    @property
    def events_address(self) -> Tuple[str, str]:
        """Where change events go: ``[events] exchange`` and ``routing_key``, by default those of the
        legacy agent's unsolicited messages (``publish_exchange``, ``publish_routing_key``). An empty
        ``[events] exchange`` is the default exchange; an empty routing key is ``publish_routing_key``'s."""
        exchange = self.publish_exchange if self.events_exchange is None else self.events_exchange
        return exchange, self.events_routing_key or self.publish_routing_key


def queue_arguments(settings: AgentSettings) -> Dict[str, Any]:
    """The ``x-`` arguments of the agent's queue declare, from ``[agent]``."""
    arguments: Dict[str, Any] = {}
    if settings.queue_expires:
        arguments["x-expires"] = int(settings.queue_expires * 1000)
    if settings.queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
        arguments["x-delivery-limit"] = settings.delivery_limit
    if settings.single_active:
        arguments["x-single-active-consumer"] = True
    return arguments


def parse_listen(text: str) -> Optional[Tuple[str, int]]:
    """``HOST:PORT`` (``[::1]:9465`` for IPv6; port 0: any free port) as (host, port); None when empty."""
    text = text.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{METRICS_OPTION} must be HOST:PORT (e.g. {DEFAULT_METRICS_LISTEN}, [::1]:9465), "
                          f"or empty to disable; got '{text}'")
    return host, int(port)


def _convert(raw: str, kind: Any, where: str) -> Any:
    text = raw.strip()
    if kind is bool:
        try:
            return parse_bool(text)
        except ValueError as err:
            raise ConfigError(f"{where} {err}") from None
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{where}: '{text}' is not a number") from None
    return text


def _read_into(instance: Any, parser: configparser.ConfigParser, path: str) -> None:
    """Set every field of ``instance`` that the file defines, converted to the field's type."""
    for spec in dataclasses.fields(instance):
        if "section" not in spec.metadata:
            continue
        section, key = spec.metadata["section"], spec.metadata["key"] or spec.name
        if parser.has_option(section, key):
            where = f"{path} [{section}] {key}"
            setattr(instance, spec.name, _convert(parser.get(section, key), spec.type, where))


def _known_keys() -> Dict[str, set]:
    known: Dict[str, set] = {section: set(keys) for section, keys in LEGACY_KEYS.items()}
    for instance in (BrokerSettings, AgentSettings):
        for spec in dataclasses.fields(instance):
            if "section" in spec.metadata:
                known.setdefault(spec.metadata["section"], set()).add(spec.metadata["key"] or spec.name)
    return known


def unknown_keys(parser: configparser.ConfigParser, path: str) -> List[str]:
    """'<file> [section] key' of each key in the agent's sections that nothing reads (typos)."""
    known = _known_keys()
    return [
        f"{path} [{section}] {key}"
        for section in known if parser.has_section(section)
        for key in parser[section] if key not in known[section] and key not in parser.defaults()
    ]


def _check(settings: AgentSettings) -> None:
    """Reject values that would only fail later, far from their cause."""
    broker = settings.broker
    rules = {
        "[rabbitmq] port": 0 < broker.port < 65536,
        "[rabbitmq] ssl_port": 0 < broker.ssl_port < 65536,
        "[rabbitmq] heartbeat": broker.heartbeat >= 0,
        "[rabbitmq] retry_delay": broker.retry_delay > 0,
        "[rabbitmq] connection_attempts": broker.connection_attempts >= 1,
        "[agent] workers": settings.workers >= 1,
        "[agent] max_request_age": settings.max_request_age >= 0,
        "[agent] reply_cache_size": settings.reply_cache_size >= 1,
        "[agent] queue_expires": settings.queue_expires >= 0,
        "[agent] reply_cache_bytes": settings.reply_cache_bytes >= 1,
        "[agent] reply_exchanges (must not name [rabbitmq] exchange)":
            settings.exchange not in settings.allowed_reply_exchanges,
        "[agent] max_message_bytes": settings.max_message_bytes >= 1,
        "[agent] delivery_limit": settings.delivery_limit >= 1,
        "[compliance] alert_interval": settings.alert_interval >= 0,
        "[events] poll_interval": settings.poll_interval > 0,
        "[events] reconcile_interval": settings.reconcile_interval > 0,
        "[events] exchange (must not be [rabbitmq] exchange: every agent would take the events as requests)":
            not settings.events_address[0] or settings.events_address[0] != settings.exchange,
    }
    bad = [name for name, ok in rules.items() if not ok]
    if bad:
        raise ConfigError(f"out of range: {', '.join(bad)}")
    try:
        broker.endpoints
    except ValueError as err:
        raise ConfigError(f"[rabbitmq] host: {err}") from None
    if settings.queue_type not in QUEUE_TYPES:
        raise ConfigError(f"[agent] queue_type must be classic or quorum, got '{settings.queue_type}'")
    if settings.consumers not in ("", SINGLE_ACTIVE, COMPETING):
        raise ConfigError(f"[agent] consumers must be {SINGLE_ACTIVE} or {COMPETING}, got '{settings.consumers}'")
    try:
        legacy_zone(settings.legacy_timestamp_zone)
    except ValueError as err:
        raise ConfigError(f"[agent] legacy_timestamp_zone: {err}") from None
    parse_listen(settings.metrics_listen)
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"[log] level must be one of {', '.join(LOG_LEVELS)}, got '{settings.log_level}'")
    if settings.library_log_level.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"[log] libraries must be one of {', '.join(LOG_LEVELS)}, got '{settings.library_log_level}'"
        )


def load_settings(path: Optional[str] = None) -> AgentSettings:
    """Read the agent config file.

    With no ``path`` the default file is read if it exists (a missing default file means all
    defaults, like the legacy agent); a path given explicitly must exist, so a typo is not
    silently replaced by defaults. A file that exists but cannot be read or parsed is an error
    either way: running on the defaults (guest, amq.fanout, a new uuid) would hide it.
    """
    chosen = path or DEFAULT_AGENT_CONFIG
    parser = configparser.ConfigParser(interpolation=None)
    if path and not os.path.exists(path):
        raise ConfigError(f"agent config file {path} does not exist")
    if os.path.exists(chosen):
        try:
            with open(chosen, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as err:
            raise ConfigError(f"cannot read the agent config file {chosen}: {err.strerror or err}") from None
        except (configparser.Error, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot parse {chosen}: {err}") from None
    for where in unknown_keys(parser, chosen):
        LOG.warning("%s is unknown and ignored (a typo?)", where)
    settings = AgentSettings()
    _read_into(settings.broker, parser, chosen)
    _read_into(settings, parser, chosen)
    _check(settings)
    return settings


def apply_url(broker: BrokerSettings, url: str, *more: str) -> None:
    """Override host, port, credentials, vhost and TLS from an ``amqp(s)://`` URL.

    The URL is parsed here rather than by ``pika.URLParameters`` so that ``amqps`` keeps the
    CA verification configured in the file instead of pika's URL-driven TLS options. ``more``
    URLs name further nodes of the same cluster: the same scheme, user and vhost on each.
    """
    configured = dataclasses.replace(broker)  # a URL without a port keeps the file's port
    _apply_one_url(broker, url)
    nodes = list(broker.endpoints)
    for other in more:
        node = dataclasses.replace(configured)
        _apply_one_url(node, other)
        if (node.use_ssl, node.username, node.password, node.vhost) != (
                broker.use_ssl, broker.username, broker.password, broker.vhost):
            raise ConfigError("every --url must have the same scheme, user, password and vhost "
                              "(they name the nodes of one cluster)")
        nodes.append((node.host, node.effective_port))
    if more:
        broker.host = ",".join(host_port(*node) for node in nodes)


def _apply_one_url(broker: BrokerSettings, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError("--url must start with amqp:// or amqps://")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("--url has an invalid port") from None
    broker.use_ssl = parts.scheme == "amqps"
    broker.host = parts.hostname or broker.host
    if port:
        setattr(broker, "ssl_port" if broker.use_ssl else "port", port)
    if parts.username is not None:
        broker.username = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        broker.password = urllib.parse.unquote(parts.password)
    if parts.path not in ("", "/"):
        broker.vhost = urllib.parse.unquote(parts.path[1:])


def safe_summary(settings: AgentSettings) -> Dict[str, Any]:
    """The settings as a dict without secrets, for the start-up log line."""
    shown = dataclasses.asdict(settings)
    shown["broker"] = settings.broker.describe()
    return shown


# -- the agent's uuid ------------------------------------------------------------------------------


def _checked(value: str, origin: str) -> str:
    """The uuid names a durable queue: a typo would leave a stray queue behind, so refuse it."""
    try:
        canonical = str(uuidlib.UUID(value)) == value.lower()
    except ValueError:
        canonical = False
    if not canonical:
        raise ConfigError(
            f"{origin} '{value}' is not a uuid (like {uuidlib.uuid4()}); it names the agent's queue"
        )
    return value


def resolve_uuid(configured: str, state_file: str, origin: str = "[rabbitmq] uuid") -> str:
    """Return ``configured`` if set, else the uuid stored in ``state_file``, else a new stored one.

    ``origin`` says where ``configured`` came from (``--uuid`` or the file), for the error.
    """
    if configured:
        return _checked(configured, origin)
    try:
        with open(state_file, encoding="utf-8") as handle:
            stored = handle.read().strip()
    except FileNotFoundError:
        stored = ""
    except OSError as err:
        raise ConfigError(f"cannot read the agent uuid file {state_file}: {err.strerror}") from None
    return _checked(stored, f"the uuid in {state_file}") if stored else _create(state_file)


def _create(state_file: str) -> str:
    """Write a new uuid atomically, so a crash mid-write never leaves a half uuid behind."""
    new = str(uuidlib.uuid4())
    directory = os.path.dirname(os.path.abspath(state_file))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".uuid-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new + "\n")
        os.replace(tmp, state_file)
    except OSError as err:
        raise ConfigError(
            f"no uuid configured and cannot store a generated one in {state_file}: {err.strerror} "
            "(set [rabbitmq] uuid, pass --uuid, or point [agent] uuid_file to a writable path)"
        ) from None
    return new


# -- the command line -------------------------------------------------------------------------------


def command_line_options(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``agent`` and ``call`` that choose the broker: --agent-config and --url."""
    broker = argparse.ArgumentParser(add_help=False, parents=[common])
    broker.add_argument(
        "--agent-config", metavar="PATH",
        help=f"synapse agent config file ([rabbitmq], [agent]); default {DEFAULT_AGENT_CONFIG} if present",
    )
    broker.add_argument(
        "--url", metavar="URL", action="append",
        help="broker URL amqp(s)://user:password@host:port/vhost (overrides the file); repeat it for "
             "each node of a cluster, tried in order",
    )
    return broker


def from_command_line(args: argparse.Namespace) -> AgentSettings:
    """The settings that --agent-config names (else the default file), with --url applied."""
    settings = load_settings(args.agent_config)
    if args.url:
        apply_url(settings.broker, *args.url)
    return settings
