"""A cloud's message bus URL, as oslo.messaging writes it (``notifications_url`` of a section).

``rabbit://user:password@host:5672/vhost`` (``amqp://`` too), or several brokers of one
cluster, ``rabbit://u:p@host1:5672,u:p@host2:5672/vhost``, which the listener tries in turn;
``rabbits://``/``amqps://`` or ``?ssl=1`` asks for TLS, verified against the system's CAs or
oslo's ``?ssl_ca_file=/path/ca.pem`` (the section's ``notifications_cacert``). The password is a secret: ``masked``
is the only form that may reach a log line, a reply or an exception. The ``host[:port]`` lists
here are also those of ``[rabbitmq] host`` (the agent's own broker nodes).
"""

import urllib.parse
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .errors import ConfigError

PLAIN_SCHEMES = ("rabbit", "amqp")
TLS_SCHEMES = ("rabbits", "amqps")
DEFAULT_PORTS = {False: 5672, True: 5671}


@dataclass(frozen=True)
class Broker:
    """One broker of the bus."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class TransportUrl:
    """A parsed bus URL: one or more brokers, one vhost, TLS or not, and the CA bundle TLS verifies
    the brokers against (None: the system's CAs). Two URLs differing only by their CA are two buses."""

    scheme: str
    brokers: Tuple[Broker, ...]
    vhost: str
    use_ssl: bool
    ca_file: Optional[str] = None

    @property
    def masked(self) -> str:
        """The URL with every password replaced by ``***``."""
        hosts = ",".join(f"{urllib.parse.quote(b.username, safe='')}:***@{b.host}:{b.port}" if b.username
                         else f"{b.host}:{b.port}" for b in self.brokers)
        return f"{self.scheme}://{hosts}/{urllib.parse.quote(self.vhost, safe='')}"


def mask(url: str) -> str:
    """``url`` with its passwords hidden, even when it does not parse (for error messages)."""
    try:
        return parse(url, "").masked
    except ConfigError:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://(unparsable URL hidden)" if rest else "(unparsable URL hidden)"


def parse(url: str, where: str) -> TransportUrl:
    """Parse ``url``; ``ConfigError`` (prefixed by ``where``) says what is wrong, never the password."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in PLAIN_SCHEMES + TLS_SCHEMES:
        raise ConfigError(f"{where} must be a rabbit:// (or amqp://, rabbits://, amqps://) URL "
                          "such as rabbit://user:password@host:5672/vhost")
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    options = urllib.parse.parse_qs(query)
    use_ssl = scheme in TLS_SCHEMES or options.get("ssl", ["0"])[-1].lower() in ("1", "true", "yes", "on")
    brokers = [_broker(part, use_ssl, where) for part in netloc.split(",")]
    vhost = urllib.parse.unquote(path) if path else "/"
    return TransportUrl(scheme, tuple(brokers), vhost, use_ssl, options.get("ssl_ca_file", [None])[-1] or None)


def _broker(text: str, use_ssl: bool, where: str) -> Broker:
    credentials, at, hostport = text.rpartition("@")
    username, _, password = credentials.partition(":") if at else ("", "", "")
    try:
        [(host, port)] = parse_hosts(hostport, DEFAULT_PORTS[use_ssl])
    except ValueError as err:  # a comma cannot be here: the brokers were split on commas
        raise ConfigError(f"{where}: {err}") from None
    return Broker(host, port, urllib.parse.unquote(username), urllib.parse.unquote(password))


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hosts(text: str, default_port: int) -> List[Tuple[str, int]]:
    """``a, b:5673, [::1]:5674`` -> [(a, default_port), (b, 5673), (::1, 5674)], in that order.

    A cluster's nodes are listed in ``[rabbitmq] host``, comma-separated; a node without a port
    uses ``port`` (``ssl_port`` with TLS). Raises ValueError naming the bad entry.
    """
    endpoints = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            raise ValueError(f"an empty host in '{text}'")
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
        elif entry.count(":") > 1:
            raise ValueError(f"'{entry}': write an IPv6 address in brackets, [{entry}]")
        else:
            host, _, port_text = entry.partition(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            port = 0
        if not host or not 0 < port < 65536:
            raise ValueError(f"'{entry}' is not host or host:port")
        endpoints.append((host, port))
    return endpoints
