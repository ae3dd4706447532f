"""``cloudmanagers call`` without a broker: the request it builds, its tables, its flags and refusals."""

import pytest

from cloudmanagers_plugin.call import build_request, parse_attr
from cloudmanagers_plugin.cli import main
from cloudmanagers_plugin.render import reply_text


@pytest.mark.parametrize("text, expected", [
    ("wait=5", ("wait", 5)), ("force=true", ("force", True)), ("x=null", ("x", None)),
    ("flavor=m1.small", ("flavor", "m1.small")), ("n=2.5", ("n", 2.5)), ("meta={\"a\":1}", ("meta", '{"a":1}')),
    ("empty=", ("empty", "")), ("q=\"quoted\"", ("q", "quoted")),
])
def test_attr_values(text, expected):
    assert parse_attr(text) == expected


def test_attr_needs_a_key():
    with pytest.raises(ValueError):
        parse_attr("novalue")


def test_request_body_targets_by_filter():
    body = build_request("read", "cm1", {"name": "vm"}, "agent-1")
    assert body["filters"] == {"uuids": ["agent-1"]} and body["collection"] == "cloudmanagers"
    assert set(body) == {"action", "collection", "id", "attributes", "filters", "timestamp"}


def test_monitor_goes_at_the_top_as_synapse_client_sends_it():
    assert build_request("update", "cm1", {"name": "vm"}, "agent-1", monitor=True)["monitor"] is True
    assert build_request("update", "cm1", {"name": "vm"}, "agent-1", monitor=False)["monitor"] is False


def test_reply_table_is_stable():
    reply = {"uuid": "u-1", "resource_id": "cm1", "status": {
        "cloudmanager": "cm1", "vm_name": "web", "vm_status": "ACTIVE", "vm_vcpus": 2, "created": True, "VMs": ["a", "b"],
        "images": [{"id": "i1", "name": "cirros"}, {"id": "i2", "name": "debian"}]}}
    assert reply_text(reply) == (
        "agent         u-1\n"
        "cloudmanager  cm1\n"
        "result        ok\n"
        "VMs           a, b\n"
        "created       true\n"
        "vm_name       web\n"
        "vm_status     ACTIVE\n"
        "vm_vcpus      2\n"
        "images (2):\n"
        "  ID  NAME\n"
        "  i1  cirros\n"
        "  i2  debian"
    )


def test_unreachable_broker_exits_4(capsys):
    assert main(["call", "ping", "--url", "amqp://guest:secret@127.0.0.1:1/", "--timeout", "0.2"]) == 4
    err = capsys.readouterr().err
    assert "cannot reach the broker" in err and "secret" not in err


def test_bad_attr_exits_2(capsys):
    assert main(["call", "read", "--attr", "oops"]) == 2


@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_changing_requests_are_not_broadcast_by_default(action, capsys):
    assert main(["call", action, "cm1", "--name", "web", "--url", "amqp://guest:guest@127.0.0.1:1/"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to broadcast a {action}" in err and "--target" in err and "--broadcast" in err


def test_unresolvable_broker_host_exits_4(capsys):
    assert main(["call", "ping", "--url", "amqp://guest:secret@no-such-host.invalid/"]) == 4
    err = capsys.readouterr().err
    assert "cannot resolve the broker host 'no-such-host.invalid'" in err and "secret" not in err


def _call_args(*argv):
    from cloudmanagers_plugin.call import _attributes
    from cloudmanagers_plugin.cli import build_parser

    return _attributes(build_parser().parse_args(["call", *argv]))


def test_flags_for_the_frequent_attributes():
    assert _call_args("create", "cm1", "--name", "web", "--flavor", "2", "--image", "cirros", "--wait", "120",
                      "--target", "u") == {"name": "web", "flavor": "2", "image": "cirros", "wait": 120.0}
    assert _call_args("update", "cm1", "--name", "web", "--status", "true", "--target", "u") == {
        "name": "web", "status": "true"}  # a string, even when it looks like a boolean
    assert _call_args("delete", "cm1", "--name", "5", "--force", "--target", "u") == {"name": "5", "force": True}
    assert _call_args("read", "cm1", "--string", "key=007", "--attr", "n=7") == {"key": "007", "n": 7}
    assert _call_args("read", "cm1") == {"details": True}  # ids and states, for the VM table
    assert _call_args("read", "cm1", "--json") == {}  # the raw reply to the request as documented
    assert _call_args("read") == {}


def test_errors_name_the_command_line_form():
    reply = {"uuid": "u", "resource_id": "cm1", "status": {},
             "error": "VM 'web' is ACTIVE: shut it down first (status: shutdown) or send force: true"}
    assert reply_text(reply, cli=True).splitlines()[-1] == (
        "error         VM 'web' is ACTIVE: shut it down first (--status shutdown) or pass --force")
    assert "send force: true" in reply_text(reply)
    required = {"uuid": "u", "status": {}, "error": "attribute 'name' is required"}
    assert reply_text(required, cli=True).endswith("--name is required")


def test_tables_show_plain_columns_id_first():
    reply = {"uuid": "u", "resource_id": "cm1", "status": {
        "cloudmanagers": "cm1", "url": "http://127.0.0.1", "VMs": ["web", "db"],
        "servers": [{"id": "i1", "name": "web", "status": "ACTIVE"}, {"id": "i2", "name": "db", "status": "SHUTOFF"}],
        "images": [{"id": "g1", "name": "cirros", "links": [{"href": "http://127.0.0.1:9292/v2/images/g1"}]}]}}
    text = reply_text(reply)
    assert "images (1):\n  ID  NAME\n  g1  cirros" in text and "href" not in text
    assert "servers (2):\n  ID  NAME  STATUS\n  i1  web   ACTIVE\n  i2  db    SHUTOFF" in text
    assert "VMs" not in text


def test_every_node_unreachable_names_the_nodes_and_the_last_failure(capsys):
    assert main(["call", "ping", "--url", "amqp://guest:secret@127.0.0.1:1/", "--url", "amqp://guest:secret@127.0.0.1:2/",
                 "--timeout", "0.2"]) == 4
    err = capsys.readouterr().err
    assert "127.0.0.1:1,127.0.0.1:2" in err and "2 nodes tried, the last: connection refused on port 2" in err
    assert "secret" not in err
