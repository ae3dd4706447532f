"""``cloudmanagers call`` against agents on the real broker: what it prints, its exit codes."""

import json

import pytest

from cloudmanagers_plugin.call import build_request
from cloudmanagers_plugin.cli import main
from tests.support.agent import unique


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
@pytest.mark.parametrize("action", ["ping", "read"])
def test_a_targeted_call_stops_at_the_first_reply(start_agent, capsys, tmp_path, monkeypatch, action):
    """One agent answers once: asking the broker for more would only wait out the window."""
    from cloudmanagers_plugin.call import RpcClient
    from cloudmanagers_plugin.controller import CloudmanagersController

    asked_again = []
    every_reply = RpcClient.replies

    def replies(self, correlation_id, timeout):
        for reply in every_reply(self, correlation_id, timeout):
            yield reply
            asked_again.append(reply)  # runs only when the caller wants a second reply

    monkeypatch.setattr(RpcClient, "replies", replies)
    agent = start_agent(CloudmanagersController(config_path=str(tmp_path / "none"), agent_uuid="a-1"))
    code = main(["call", action, "--target", agent.settings.uuid, "--timeout", "1"])
    out = capsys.readouterr()
    assert asked_again == []
    assert code == (0 if action == "ping" else 1)  # read: "none" is no cloud managers file, an error reply
    assert "a-1" in (out.out if action == "ping" else out.err)


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


@pytest.mark.rabbitmq
def test_an_error_reply_goes_to_stderr(start_agent, capsys, tmp_path):
    from cloudmanagers_plugin.controller import CloudmanagersController

    agent = start_agent(CloudmanagersController(config_path=str(tmp_path / "absent.conf"), agent_uuid="a-1"))
    assert main(["call", "read", "cm1", "--target", agent.settings.uuid]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "result        error" in err and "absent.conf" in err
