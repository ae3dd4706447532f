"""Pure rules: permissions.conf, filters, request validation and age, the ordered pool."""

import threading
import time

import pytest

from cloudmanagers_plugin.agent.admission import HostFilter, Permissions, decode, read_filters
from cloudmanagers_plugin.agent.execution import OrderedPool
from cloudmanagers_plugin.errors import BadRequest, ConfigError
from cloudmanagers_plugin.protocol import parse_envelope


def permissions(tmp_path, text):
    path = tmp_path / "permissions.conf"
    path.write_text(text)
    return Permissions.load(str(path))


def test_first_matching_rule_wins(tmp_path):
    rules = permissions(tmp_path, """
# operators may read cm_prod only
ops cloudmanagers cm_prod R
ops cloudmanagers * CRUD
admin * * CRUD
* * * -
""")
    assert rules.allows("ops", "cloudmanagers", "cm_prod", "read")
    assert not rules.allows("ops", "cloudmanagers", "cm_prod", "delete")
    assert rules.allows("ops", "cloudmanagers", "cm_dev", "delete")
    assert rules.allows("admin", "cloudmanagers", "anything", "create")
    assert not rules.allows("guest", "cloudmanagers", "cm_dev", "read")
    assert not rules.allows(None, "cloudmanagers", "cm_dev", "read")


def test_read_grants_ping_and_unknown_actions_are_denied(tmp_path):
    rules = permissions(tmp_path, "* cloudmanagers * R\n")
    assert rules.allows("x", "cloudmanagers", "", "ping")
    assert not rules.allows("x", "cloudmanagers", "", "listimages")


def test_patterns_match_whole_values_and_quoted_ids(tmp_path):
    rules = permissions(tmp_path, 'ops cloudmanagers "cm prod*" CRUD\n* * * -\n')
    assert rules.allows("ops", "cloudmanagers", "cm prod 2", "update")
    assert not rules.allows("ops2", "cloudmanagers", "cm prod", "update")
    assert not rules.allows("ops", "cloudmanagers", "xcm prod", "update")


@pytest.mark.parametrize("text", ["ops cloudmanagers cm XYZ\n", "just two\n", "", "# only a comment\n"])
def test_malformed_or_empty_file_stops_the_start(tmp_path, text):
    with pytest.raises(ConfigError):
        permissions(tmp_path, text)


def host(**facts):
    return HostFilter("AGENT-1", {name: (lambda values=values: frozenset(values)) for name, values in facts.items()})


def test_filters_all_must_match():
    agent = host(hostnames={"web1.example.com", "web1"}, ipaddresses={"10.0.0.5"},
                 macaddresses={"52:54:00:12:34:56"}, platforms={"linux"})
    assert agent.matches({})
    assert agent.matches({"uuids": ["agent-1"], "hostnames": ["web*"]})
    assert agent.matches({"ipaddresses": ["10.0.0.*"], "macaddresses": ["52-54-00-12-34-56"], "platforms": ["Linux"]})
    assert not agent.matches({"uuids": ["agent-1"], "hostnames": ["db*"]})
    assert not agent.matches({"uuids": []})
    assert agent.matches({"uuids": ["agent-1"], "zones": ["eu"]})  # unknown names are skipped
    assert not agent.matches({"zones": ["eu"]})  # ... but filters naming nothing known match nothing


def test_real_host_facts_match_this_host():
    import platform
    import socket

    agent = HostFilter("u")
    assert agent.matches({"hostnames": [socket.gethostname()], "ipaddresses": ["127.0.0.1"],
                          "platforms": [platform.system()]})


@pytest.mark.parametrize("body, message", [
    (b"{nope", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100000, "not valid JSON"),
    (b"[1, 2]", "JSON object"),
], ids=["syntax", "bytes", "deep", "array"])
def test_undecodable_bodies(body, message):
    with pytest.raises(BadRequest, match=message):
        decode(body)


@pytest.mark.parametrize("message, error", [
    ({"action": "read"}, "'collection' is missing"),
    ({"collection": "cloudmanagers", "action": ""}, "'action' is empty"),
    ({"collection": "cloudmanagers", "action": 5}, "'action' is missing or is not a string"),
    ({"collection": "cloudmanagers", "action": "read", "attributes": None}, "'attributes' must be an object"),
    ({"collection": "cloudmanagers", "action": "read", "monitor": "yes"}, "'monitor' must be true or false"),
    ({"collection": "cloudmanagers", "action": "read", "id": 7}, "'id' must be a string"),
    ({"collection": "cloudmanagers", "action": "read", "timestamp": 7}, "'timestamp' must be a string"),
])
def test_envelope_validation(message, error):
    with pytest.raises(BadRequest, match=error):
        parse_envelope(message, "cloudmanagers")


def test_validation_merges_legacy_defaults():
    request = parse_envelope(
        {"collection": "cloudmanagers", "action": "read", "attributes": {"name": "vm"}}, "cloudmanagers")
    assert request.message["id"] == "" and request.message["attributes"] == {"name": "vm"}
    assert (request.cm_id, request.vm_name) == ("", "vm")


def test_monitor_absent_is_not_false():
    """Absent leaves monitoring as it is; false stops it: the two must stay apart."""
    request = {"collection": "cloudmanagers", "action": "update"}
    assert parse_envelope(request, "cloudmanagers").monitor is None
    assert parse_envelope({**request, "monitor": False}, "cloudmanagers").monitor is False
    assert parse_envelope({**request, "monitor": True}, "cloudmanagers").monitor is True


@pytest.mark.parametrize("filters", [[], {"uuids": "a"}, {"uuids": [1]}])
def test_malformed_filters(filters):
    with pytest.raises(BadRequest, match="filters"):
        read_filters({"filters": filters})


def test_pool_keeps_order_per_key_and_runs_keys_in_parallel():
    pool = OrderedPool(4)
    done = []
    lock = threading.Lock()

    b_started, side_by_side = threading.Event(), []

    def job(key, n, delay):
        def run():
            if (key, n) == ("b", 0):
                b_started.set()
            if (key, n) == ("a", 0):  # a's first job waits for b's: one after the other, it would not come
                side_by_side.append(b_started.wait(10))
            time.sleep(delay)
            with lock:
                done.append((key, n))
        return run

    for n, delay in enumerate([0.2, 0.1, 0.0]):
        pool.submit("a", job("a", n, delay))
        pool.submit("b", job("b", n, delay))
    pool.submit(None, lambda: 1 / 0)  # a failing job is logged, not fatal
    pool.shutdown()
    assert [n for key, n in done if key == "a"] == [0, 1, 2]
    assert [n for key, n in done if key == "b"] == [0, 1, 2]
    assert side_by_side == [True]  # a and b ran side by side
