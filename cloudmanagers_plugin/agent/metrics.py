"""The agent's health and Prometheus metrics, and the HTTP listener that serves them.

Several agents may serve one queue (a group), on one host or several: an operator, a load
balancer or systemd's neighbours need to know, of each process, whether it is connected, which
broker node it uses, whether it works or stands by, and what it has done. ``AgentMetrics`` holds
it in a registry of its own (not prometheus_client's global one), so several agents in one
process (tests, benches) each count their own. What the agent's status already knows (role,
broker node, reconnects, redeliveries, abandoned requests: ``status.AgentStatus``, kept by the
transport) is read from it at each scrape, not counted twice; the transport reports each
request's start and end here, and the drivers each OpenStack answer (``DriverEvents``).

``MetricsServer`` serves ``/metrics`` (prometheus_client's own WSGI application) and ``/healthz``
(200 with a small JSON while connected and consuming or standing by, 503 otherwise) on
``[agent] metrics_listen``, from prometheus_client's threading WSGI server in a daemon thread:
a scrape never runs on, nor waits for, the AMQP I/O thread. The address is bound when the agent
is built, so a port already in use is a configuration error (exit 2) before any connection.
"""

import errno
import json
import logging
import socket
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from ..drivers.base import DriverEvents
from ..errors import ConfigError
from .admission import NOT_RUN, Answer
from .status import ACTIVE, DISCONNECTED, STANDBY, AgentStatus

ROLES = (ACTIVE, STANDBY, DISCONNECTED)
ACTIONS = frozenset({"read", "create", "update", "delete", "ping"})  # any other action counts as "other"
# From a cached read (milliseconds) to a create that waits for its VM (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def outcome_label(answer: Answer) -> str:
    """A bounded word for an answer: ok, error, internal_error, refused (not run: its reply
    address is not allowed), ignored (a broadcast whose filters do not name this agent) or
    not_run (left to the broker: its channel closed before it started)."""
    if answer is NOT_RUN:
        return "not_run"
    if answer.body is None:
        return "ignored" if answer.level < logging.WARNING else "refused"
    if answer.outcome == "ok":
        return "ok"
    return "internal_error" if answer.level >= logging.ERROR else "error"


def action_label(action: str) -> str:
    """The request's action when it is one the agent knows; the requester must not mint labels."""
    return action if action in ACTIONS else "other"


class StatusCollector:
    """The families an ``AgentStatus`` answers, read at each scrape (a custom collector)."""

    def __init__(self, status: AgentStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status
        role = status.role
        yield StateSetMetricFamily("cloudmanagers_agent_role", "What this agent does in its group: active "
                                   "(it received work), standby (consuming, waiting for work: the single "
                                   "active consumer's other agents) or disconnected",
                                   {name: name == role for name in ROLES})
        yield InfoMetricFamily("cloudmanagers_agent_broker", "The broker node this agent is connected to "
                               "(node is empty while disconnected)", value={"node": status.broker_node})
        yield GaugeMetricFamily("cloudmanagers_agent_consuming", "1 while the broker has confirmed this agent's "
                                "consumer", value=1 if role != DISCONNECTED else 0)
        for name, text, count in (
            ("cloudmanagers_agent_reconnects", "Connections to the broker opened after the first one",
             status.reconnects),
            ("cloudmanagers_agent_redeliveries", "Requests the broker marked as delivered before (to this agent "
             "or another)", status.redeliveries),
            ("cloudmanagers_agent_abandoned_requests", "Requests not run because they reached the queue's "
             "delivery limit (answered with an error)", status.abandoned),
        ):
            yield CounterMetricFamily(name, text, value=count)


class AgentMetrics(DriverEvents):
    """Every metric family of one agent, and what ``/healthz`` says.

    The transport calls ``received`` and ``finished`` from the I/O thread, the drivers the
    ``DriverEvents`` methods from worker threads; prometheus_client's metrics are thread-safe,
    and the status is plain values that the HTTP thread only reads. ``attach`` the agent's
    status before serving.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._status = AgentStatus(single_active=False)  # until the agent's own is attached
        self._in_flight = Gauge("cloudmanagers_agent_requests_in_flight", "Requests received and not yet "
                                "answered and acked (or given back to the broker)", registry=registry)
        self._requests = Counter("cloudmanagers_agent_requests", "Requests ended, by action and outcome "
                                 "(ok, error, internal_error, refused, ignored)", ["action", "outcome"],
                                 registry=registry)
        self._latency = Histogram("cloudmanagers_agent_request_duration_seconds", "From a request's delivery to "
                                  "its end (reply confirmed and ack sent), by action", ["action"],
                                  buckets=LATENCY_BUCKETS, registry=registry)
        self._cloud_requests = Counter("cloudmanagers_openstack_requests", "OpenStack HTTP requests answered, by "
                                       "cloud manager, method and HTTP status", ["cloud_manager", "method", "code"],
                                       registry=registry)
        self._tokens = Counter("cloudmanagers_openstack_token_requests", "Keystone tokens requested (the first "
                               "one of a cloud manager and every refresh)", ["cloud_manager"], registry=registry)
        self._collector: Optional[StatusCollector] = None
        self.attach(self._status)

    def attach(self, status: AgentStatus) -> None:
        """Report ``status`` (the agent's role, node and counters) from now on."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._status = status
        self._collector = StatusCollector(status)
        self.registry.register(self._collector)

    # -- requests (I/O thread) -----------------------------------------------------------------

    def received(self) -> None:
        self._in_flight.inc()

    def finished(self, action: str, answer: Answer, seconds: float) -> None:
        """A request ended: answered and acked, acked without a reply, or left to the broker."""
        self._in_flight.dec()
        label = action_label(action)
        self._requests.labels(label, outcome_label(answer)).inc()
        self._latency.labels(label).observe(seconds)

    # -- OpenStack (worker threads, through the drivers) ---------------------------------------

    def cloud_request(self, cloud_manager: str, method: str, status: int) -> None:
        self._cloud_requests.labels(cloud_manager, method, str(status)).inc()

    def token_request(self, cloud_manager: str) -> None:
        self._tokens.labels(cloud_manager).inc()

    # -- /healthz ------------------------------------------------------------------------------

    def health(self) -> Tuple[bool, Dict[str, Any]]:
        """(healthy, what /healthz says): healthy while the broker confirmed the consumer, whether
        the agent works (active) or waits its turn (standby)."""
        role, node = self._status.role, self._status.broker_node
        healthy = role != DISCONNECTED
        return healthy, {"status": "ok" if healthy else "unavailable", "role": role,
                         "broker": node or None, "consuming": healthy}


# -- the listener ---------------------------------------------------------------------------------


StartResponse = Callable[[str, List[Tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr (the agent's log is for requests)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


def health_and_metrics_app(metrics: AgentMetrics) -> Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application: ``/metrics``, ``/healthz``, 404 for anything else."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return exposition(environ, start_response)
        if path == "/healthz":
            healthy, body = metrics.health()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [json.dumps(body).encode("utf-8")]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: this agent serves /metrics and /healthz\n"]

    return app


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``address`` (host, port), bound at once, served by ``start``."""

    def __init__(self, metrics: AgentMetrics, address: Tuple[str, int], option: str) -> None:
        host, port = address
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]  # IPv4 or IPv6
            server_class = type("MetricsHTTPServer", (ThreadingWSGIServer,), {"address_family": family})
            self._server = make_server(host, port, health_and_metrics_app(metrics), server_class,
                                       handler_class=_QuietHandler)
        except OSError as err:
            hint = ("another process (another agent?) listens there: give each agent of a host its own "
                    "address with --metrics-listen HOST:PORT, or an empty one to disable"
                    if err.errno == errno.EADDRINUSE else "check the address")
            raise ConfigError(f"{option} {host}:{port}: cannot listen: {err.strerror or err}; {hint}") from None
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        """The address actually bound (the port the system chose for port 0)."""
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="agent-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
