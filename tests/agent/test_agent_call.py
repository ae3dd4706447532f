"""``cloudmanagers call``: what it publishes, what it prints, its exit codes."""

import json

import pytest

from agent_helpers import unique
from cloudmanagers_plugin.agent.client import build_request, parse_attr
from cloudmanagers_plugin.agent.render import reply_text
from cloudmanagers_plugin.cli import main


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
