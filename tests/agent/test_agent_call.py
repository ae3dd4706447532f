"""``cloudmanagers call``: what it publishes, what it prints, its exit codes."""

import json

import pytest

from cloudmanagers_plugin.call import build_request, parse_attr
from cloudmanagers_plugin.cli import main
from cloudmanagers_plugin.render import reply_text
from tests.support.agent import unique


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


@pytest.mark.rabbitmq
def test_read_prints_the_status_table(start_agent, capsys):
    agent = start_agent()
    code = main(["call", "read", "cm1", "--name", "web", "--attr", "n=7", "--target", agent.settings.uuid])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[:3] == [f"agent         {agent.settings.uuid}", "cloudmanager  cm1", "result        ok"]
    assert "action        read" in out and "n             7" in out


@pytest.mark.rabbitmq
def test_error_reply_exits_1_and_json_is_raw(start_agent, capsys, tmp_path):
    from cloudmanagers_plugin.controller import CloudmanagersController

    agent = start_agent(CloudmanagersController(config_path=str(tmp_path / "absent.conf"), agent_uuid="a-1"))
    code = main(["call", "read", "cm1", "--target", agent.settings.uuid, "--json"])
    reply = json.loads(capsys.readouterr().out)
    assert code == 1 and "absent.conf" in reply["error"] and reply["uuid"] == "a-1" and reply["status"] == {}


@pytest.mark.rabbitmq
def test_ping_lists_every_agent_that_answers(start_agent, exchange, capsys, tmp_path):
    from cloudmanagers_plugin.controller import CloudmanagersController

    uuids = [unique("agent-test"), unique("agent-test")]
    first, second = (
        start_agent(CloudmanagersController(config_path=str(tmp_path / "none"), agent_uuid=uuid), uuid=uuid)
        for uuid in uuids
    )
    code = main(["call", "ping", "--exchange", exchange, "--timeout", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].split() == ["AGENT", "VERSION", "REPLY_MS"]
    assert sorted(line.split()[0] for line in lines[1:3]) == sorted([first.settings.uuid, second.settings.uuid])
    assert lines[3] == "2 agent(s) answered within 1 s"


@pytest.mark.rabbitmq
def test_no_agent_and_no_reply_exit_3(broker, capsys):
    assert main(["call", "read", "--target", unique("nobody"), "--timeout", "1"]) == 3
    assert "no agent queue named" in capsys.readouterr().err
    import pika

    queue = unique("agent-test-idle")
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().queue_declare(queue, exclusive=True)
        assert main(["call", "read", "--target", queue, "--timeout", "0.5"]) == 3
        assert "no reply within 0.5 s" in capsys.readouterr().err


def test_unreachable_broker_exits_4(capsys):
    assert main(["call", "ping", "--url", "amqp://guest:secret@127.0.0.1:1/", "--timeout", "0.2"]) == 4
    err = capsys.readouterr().err
    assert "cannot reach the broker" in err and "secret" not in err


def test_bad_attr_exits_2(capsys):
    assert main(["call", "read", "--attr", "oops"]) == 2


# -- issue 16: safe defaults, broadcasts that show every reply, error paths, flags ------------


@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_changing_requests_are_not_broadcast_by_default(action, capsys):
    assert main(["call", action, "cm1", "--name", "web", "--url", "amqp://guest:guest@127.0.0.1:1/"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to broadcast a {action}" in err and "--target" in err and "--broadcast" in err


@pytest.mark.rabbitmq
def test_broadcast_prints_every_reply_and_fails_on_any_error(start_agent, exchange, capsys, tmp_path):
    from cloudmanagers_plugin.controller import CloudmanagersController

    good = start_agent()
    bad_uuid = unique("agent-test")
    start_agent(CloudmanagersController(config_path=str(tmp_path / "absent.conf"), agent_uuid=bad_uuid), uuid=bad_uuid)
    code = main(["call", "update", "cm1", "--name", "web", "--status", "PAUSED", "--broadcast",
                 "--exchange", exchange, "--timeout", "1.5"])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"agent         {good.settings.uuid}" in out and "action        update" in out
    assert f"agent         {bad_uuid}" in err and "absent.conf" in err
    assert err.strip().splitlines()[-1] == "2 agents answered within 1.5 s, 1 error"


@pytest.mark.rabbitmq
def test_broadcast_json_is_a_list_of_replies(start_agent, exchange, capsys):
    first, second = start_agent(), start_agent()
    assert main(["call", "read", "cm1", "--exchange", exchange, "--timeout", "1", "--json"]) == 0
    replies = json.loads(capsys.readouterr().out)
    assert sorted(reply["uuid"] for reply in replies) == sorted([first.settings.uuid, second.settings.uuid])


def test_unresolvable_broker_host_exits_4(capsys):
    assert main(["call", "ping", "--url", "amqp://guest:secret@no-such-host.invalid/"]) == 4
    err = capsys.readouterr().err
    assert "cannot resolve the broker host 'no-such-host.invalid'" in err and "secret" not in err


@pytest.mark.rabbitmq
def test_refused_broker_login_exits_2(broker, capsys):
    assert main(["call", "ping", "--url", "amqp://guest:not-the-password@127.0.0.1/"]) == 2
    assert "refused the login of user 'guest'" in capsys.readouterr().err


@pytest.mark.rabbitmq
def test_missing_exchange_is_named(broker, capsys):
    missing = unique("no-such-exchange")
    assert main(["call", "ping", "--exchange", missing]) == 3
    err = capsys.readouterr().err
    assert f"the exchange '{missing}' does not exist" in err and "lost the broker" not in err


@pytest.mark.rabbitmq
def test_request_expires_with_the_timeout(broker):
    import pika

    from cloudmanagers_plugin.call import RpcClient
    from cloudmanagers_plugin.agent.settings import BrokerSettings

    queue = unique("agent-test-idle")
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, exclusive=True)
        client = RpcClient(BrokerSettings(host="127.0.0.1"))
        try:
            client.send(build_request("read", "cm1", {}, queue), "", queue, 30)
        finally:
            client.close()
        _method, properties, _body = channel.basic_get(queue, auto_ack=True)
        assert properties.expiration == "30000"


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


@pytest.mark.rabbitmq
def test_an_error_reply_goes_to_stderr(start_agent, capsys, tmp_path):
    from cloudmanagers_plugin.controller import CloudmanagersController

    agent = start_agent(CloudmanagersController(config_path=str(tmp_path / "absent.conf"), agent_uuid="a-1"))
    assert main(["call", "read", "cm1", "--target", agent.settings.uuid]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "result        error" in err and "absent.conf" in err
