"""The agent's metrics registry, its /metrics and /healthz listener, and what the drivers report."""

import json
import logging
import re
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY

from cloudmanagers_plugin import CloudmanagersController
from cloudmanagers_plugin.agent.admission import SILENT, Answer
from cloudmanagers_plugin.agent.metrics import AgentMetrics, MetricsServer, action_label, outcome_label
from cloudmanagers_plugin.agent.settings import parse_listen
from cloudmanagers_plugin.agent.status import AgentStatus
from cloudmanagers_plugin.errors import ConfigError
from tests.support.controller import status_of
from tests.support.fakecloud import NOVA

FAMILIES = {
    "cloudmanagers_agent_role", "cloudmanagers_agent_broker", "cloudmanagers_agent_consuming",
    "cloudmanagers_agent_requests_in_flight", "cloudmanagers_agent_requests", "cloudmanagers_agent_request_duration_seconds",
    "cloudmanagers_openstack_requests", "cloudmanagers_openstack_token_requests", "cloudmanagers_agent_reconnects",
    "cloudmanagers_agent_redeliveries", "cloudmanagers_agent_abandoned_requests",
}
OK = Answer(b"{}", "ok")


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def get(url):
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def attached(single_active=False):
    metrics, status = AgentMetrics(), AgentStatus(single_active)
    metrics.attach(status)
    return metrics, status


@pytest.fixture
def served():
    metrics, status = attached(single_active=True)
    server = MetricsServer(metrics, ("127.0.0.1", 0), "metrics_listen")
    server.start()
    yield status, "http://127.0.0.1:%d" % server.address[1]
    server.stop()


def test_every_family_is_in_the_agents_own_registry_and_not_the_global_one():
    metrics = AgentMetrics()
    assert {family.name for family in metrics.registry.collect()} == FAMILIES
    assert not FAMILIES & {family.name for family in REGISTRY.collect()}


def test_two_agents_in_one_process_count_apart():
    (first, first_status), (second, _) = attached(), attached()
    first_status.delivered(redelivered=True)
    first.received()
    assert value(first, "cloudmanagers_agent_redeliveries_total") == 1
    assert value(first, "cloudmanagers_agent_requests_in_flight") == 1
    assert value(second, "cloudmanagers_agent_redeliveries_total") == 0
    assert value(second, "cloudmanagers_agent_requests_in_flight") == 0


def test_role_node_and_counters_are_read_from_the_agents_status():
    metrics, status = attached(single_active=True)
    assert value(metrics, "cloudmanagers_agent_role", cloudmanagers_agent_role="disconnected") == 1
    status.connected("127.0.0.1:5672")
    assert value(metrics, "cloudmanagers_agent_consuming") == 0  # connected, no consume-ok yet
    status.consuming()
    assert value(metrics, "cloudmanagers_agent_role", cloudmanagers_agent_role="standby") == 1
    assert value(metrics, "cloudmanagers_agent_consuming") == 1
    status.delivered(redelivered=False)
    assert value(metrics, "cloudmanagers_agent_role", cloudmanagers_agent_role="active") == 1
    assert value(metrics, "cloudmanagers_agent_role", cloudmanagers_agent_role="standby") == 0
    assert value(metrics, "cloudmanagers_agent_broker_info", node="127.0.0.1:5672") == 1
    assert value(metrics, "cloudmanagers_agent_reconnects_total") == 0
    status.disconnected()
    assert value(metrics, "cloudmanagers_agent_consuming") == 0
    assert value(metrics, "cloudmanagers_agent_role", cloudmanagers_agent_role="disconnected") == 1
    status.connected("127.0.0.1:5673")
    status.abandoned += 1
    assert value(metrics, "cloudmanagers_agent_reconnects_total") == 1
    assert value(metrics, "cloudmanagers_agent_abandoned_requests_total") == 1
    assert value(metrics, "cloudmanagers_agent_broker_info", node="127.0.0.1:5673") == 1


def test_requests_by_action_and_outcome_with_their_latency():
    metrics = AgentMetrics()
    for _ in range(3):
        metrics.received()
    metrics.finished("read", OK, 0.02)
    metrics.finished("create", Answer(b"{}", "error: no flavor", logging.WARNING), 3.0)
    assert value(metrics, "cloudmanagers_agent_requests_in_flight") == 1
    assert value(metrics, "cloudmanagers_agent_requests_total", action="read", outcome="ok") == 1
    assert value(metrics, "cloudmanagers_agent_requests_total", action="create", outcome="error") == 1
    assert value(metrics, "cloudmanagers_agent_request_duration_seconds_bucket", action="read", le="0.025") == 1
    assert value(metrics, "cloudmanagers_agent_request_duration_seconds_bucket", action="create", le="2.5") == 0
    assert value(metrics, "cloudmanagers_agent_request_duration_seconds_sum", action="create") == 3.0


@pytest.mark.parametrize("answer, label", [
    (OK, "ok"), (Answer(b"{}", "error: x", logging.WARNING), "error"),
    (Answer(b"{}", "error: internal error (KeyError)", logging.ERROR), "internal_error"),
    (Answer(None, "refused: reply_exchange 'x' is not allowed", logging.WARNING), "refused"), (SILENT, "ignored"),
])
def test_outcome_labels_are_few(answer, label):
    assert outcome_label(answer) == label


def test_a_requester_cannot_mint_action_labels():
    assert [action_label(a) for a in ("read", "ping", "drop_tables", "-")] == ["read", "ping", "other", "other"]


def test_metrics_and_health_over_http(served):
    agent, url = served
    assert get(url + "/healthz") == (503, json.dumps({"status": "unavailable", "role": "disconnected",
                                                      "broker": None, "consuming": False}))
    agent.connected("127.0.0.1:5672")
    assert get(url + "/healthz")[0] == 503  # connected, not yet consuming
    agent.consuming()
    status, body = get(url + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "role": "standby", "broker": "127.0.0.1:5672",
                                                  "consuming": True}
    agent.delivered(redelivered=True)
    assert json.loads(get(url + "/healthz")[1])["role"] == "active"
    status, text = get(url + "/metrics")
    assert status == 200 and "cloudmanagers_agent_redeliveries_total 1.0" in text
    assert 'cloudmanagers_agent_role{cloudmanagers_agent_role="active"} 1.0' in text
    assert get(url + "/")[0] == 404


def test_an_address_in_use_is_a_configuration_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"127.0.0.1:{port}: cannot listen: Address already in use; .*"
                                              r"--metrics-listen HOST:PORT"):
            MetricsServer(AgentMetrics(), ("127.0.0.1", port), "metrics_listen")


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:9465", ("127.0.0.1", 9465)), ("[::1]:9465", ("::1", 9465)), ("localhost:0", ("localhost", 0)),
    ("", None), ("  ", None),
])
def test_listen_addresses(text, address):
    assert parse_listen(text) == address


@pytest.mark.parametrize("text", ["9465", "127.0.0.1", "127.0.0.1:http", ":9465", "127.0.0.1:70000"])
def test_bad_listen_addresses(text):
    with pytest.raises(ConfigError, match="must be HOST:PORT"):
        parse_listen(text)


def test_the_driver_reports_each_openstack_answer_and_token(conf_path, cloud):
    metrics = AgentMetrics()
    controller = CloudmanagersController(config_path=conf_path, events=metrics)
    cloud.add_server("vm")
    for _ in range(3):
        status_of(controller.process({"action": "read", "id": "test_os", "attributes": {"name": "vm"}}))
    assert "ghost" in controller.process({"action": "read", "id": "test_os", "attributes": {"name": "ghost"}})["error"]
    assert value(metrics, "cloudmanagers_openstack_token_requests_total", cloud_manager="test_os") == 1
    gets = value(metrics, "cloudmanagers_openstack_requests_total", cloud_manager="test_os", method="GET", code="200")
    posts = value(metrics, "cloudmanagers_openstack_requests_total", cloud_manager="test_os", method="POST", code="201")
    history = cloud.mocker.request_history
    assert gets == len([r for r in history if r.method == "GET"]) and posts == 1  # the token


def test_a_token_refresh_is_counted(conf_path, cloud):
    """Nova refuses the token once (401): keystoneauth gets a new one and sends the request again."""
    metrics = AgentMetrics()
    controller = CloudmanagersController(config_path=conf_path, events=metrics)
    vm = cloud.add_server("vm")
    status_of(controller.process({"action": "read", "id": "test_os", "attributes": {"name": vm["id"]}}))
    cloud.mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers/[^/?]+$"),
                     [{"status_code": 401, "json": {"error": {"code": 401}}}, {"json": cloud._show}])
    status_of(controller.process({"action": "read", "id": "test_os", "attributes": {"name": vm["id"]}}))
    assert value(metrics, "cloudmanagers_openstack_token_requests_total", cloud_manager="test_os") == 2
    assert value(metrics, "cloudmanagers_openstack_requests_total", cloud_manager="test_os", method="GET",
                 code="401") == 1
