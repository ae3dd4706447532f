"""What an operator meets first on the real broker: refusals at start, per-request log lines,
queue expiry, systemd readiness and the start-up log of the `cloudmanagers agent` command (issue 16)."""

import logging
import os
import re
import signal
import socket
import threading

import pika
import pytest

from cloudmanagers_plugin.agent.service import AgentService
from cloudmanagers_plugin.controller import CloudmanagersController
from tests.support.agent import FakeController, agent_lines, agent_settings, delete_queue, request, unique, wait_for_consumer
from tests.support.agent_command import CM_SECTION, agent_command, finish, write_file


def run_service(settings, timeout=20.0):
    """Run an AgentService to its end in a thread; return its exit code (None: still running)."""
    service = AgentService(settings, FakeController(agent_uuid=settings.uuid))
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", service.run()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        service.request_stop()
        thread.join(10)
    delete_queue(settings.uuid)
    return result.get("code")


# -- broker configuration errors at start: exit 2, no retry loop, no false "consuming" --------


@pytest.mark.rabbitmq
@pytest.mark.parametrize("change, expected", [
    (lambda s: setattr(s, "exchange", unique("no-such-exchange")), "no exchange"),
    (lambda s: setattr(s.broker, "password", "not-the-password"), "refused the login of user 'guest'"),
    (lambda s: setattr(s.broker, "vhost", unique("no-such-vhost")), "denied access to vhost"),
    (lambda s: setattr(s, "declare", False), "the queue does not exist"),
])
def test_permanent_broker_refusals_at_start_exit_2(broker, caplog, change, expected):
    caplog.set_level(logging.INFO)
    settings = agent_settings()
    change(settings)
    assert run_service(settings) == 2
    errors = [r.getMessage() for r in agent_lines(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1 and expected in errors[0] and settings.broker.describe() in errors[0], errors
    assert not any("consuming" in r.getMessage() for r in agent_lines(caplog))


@pytest.mark.rabbitmq
def test_consuming_is_logged_after_consume_ok(start_agent, caplog):
    caplog.set_level(logging.INFO)
    agent = start_agent()
    agent.stop()  # the broker may list the consumer before the agent handled consume-ok: drain first
    consuming = [r.getMessage() for r in agent_lines(caplog) if "consuming" in r.getMessage()]
    assert consuming == [f"consuming from queue {agent.settings.uuid} on amqp://guest@127.0.0.1:5672/%2F"]


# -- one logfmt line per request, at a level that says how it went -----------------------------


class _Broken(FakeController):
    def process(self, message):
        if message["action"] == "delete":
            raise RuntimeError("bug")
        return super().process(message)


@pytest.mark.rabbitmq
def test_request_lines_level_full_error_and_logfmt(start_agent, requester, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    missing = tmp_path / ("a-cloud-managers-file-with-a-long-name-" + "x" * 60 + ".conf")
    failing = start_agent(CloudmanagersController(config_path=str(missing), agent_uuid="a-1"))
    broken = start_agent(_Broken())
    sent = [requester.send(request("read", name="web vm"), failing.settings.uuid),
            requester.send(request("read", name="web"), broken.settings.uuid),
            requester.send(request("delete", name="web"), broken.settings.uuid)]
    replies = requester.replies(3)
    failing.stop(), broken.stop()  # a request's line is logged once its ack is done: stopping drains them
    lines = {r.getMessage().split(" corr=")[1].split()[0]: r for r in agent_lines(caplog) if " corr=" in r.getMessage()}
    error, ok, internal = (lines[corr] for corr in sent)
    assert (error.levelno, ok.levelno, internal.levelno) == (logging.WARNING, logging.INFO, logging.ERROR)
    assert f'outcome="error: {replies[sent[0]]["error"]}"' in error.getMessage()  # whole, quoted
    assert str(missing) in error.getMessage() and 'vm="web vm"' in error.getMessage()
    assert " outcome=ok reply=answered " in ok.getMessage()


# -- queue expiry, and a queue declared with other arguments ------------------------------------


@pytest.mark.rabbitmq
def test_queue_expires_sets_x_expires_and_a_mismatch_exits_2(start_agent, caplog):
    agent = start_agent(queue_expires=3600)
    uuid = agent.settings.uuid
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().queue_declare(uuid, durable=True, arguments={"x-expires": 3600000})  # same: accepted
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            connection.channel().queue_declare(uuid, durable=True)
        assert refused.value.reply_code == 406
    agent.stop()
    caplog.set_level(logging.ERROR)
    settings = agent_settings(uuid=uuid, exchange=agent.settings.exchange)  # restarted without queue_expires
    assert run_service(settings) == 2
    assert "queue_expires" in caplog.text and f"rabbitmqctl delete_queue {uuid}" in caplog.text


# -- systemd readiness --------------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_ready_is_notified_once_consuming(start_agent, monkeypatch, tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.bind(path)
        notify_socket.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        agent = start_agent()
        message = notify_socket.recv(4096).decode()
        assert message.splitlines() == ["READY=1", f"STATUS=consuming from queue {agent.settings.uuid}"]
        agent.stop()
        assert notify_socket.recv(4096) == b"STOPPING=1"


@pytest.mark.rabbitmq
def test_agent_logs_version_and_sections_at_start(broker, tmp_path):
    uuid = "5d0c1b9e-6f0e-4c57-9d3e-" + os.urandom(6).hex()
    agent_config = write_file(os.path.join(tmp_path, "agent.conf"),
                          f"[rabbitmq]\nhost = 127.0.0.1\nuuid = {uuid}\nexchange =\n[agent]\nworker = 2\n"
                              f"state_dir = {tmp_path}\n[events]\nenabled = false\n")
    config = write_file(os.path.join(tmp_path, "cloudmanagers.conf"), CM_SECTION)
    process = agent_command("--agent-config", agent_config, "--config", config, "--metrics-listen", "127.0.0.1:0")
    try:
        wait_for_consumer(uuid, timeout=20)
        process.send_signal(signal.SIGTERM)
        code, output = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
        delete_queue(uuid)
    from cloudmanagers_plugin.version import __version__

    assert code == 0, output
    assert f"cloudmanagers agent {__version__} (uuid {uuid}) starting" in output
    assert ("cloud manager 'cm1': openstack, keystone http://127.0.0.1:5000/v3, project demo, "
            "compute API 2.60") in output
    assert "WARNING cloudmanagers_plugin.agent: cloud manager 'cm2' is invalid" in output
    assert f"{agent_config} [agent] worker is unknown and ignored" in output  # a typo of workers
    assert re.search(r"metrics on http://127\.0\.0\.1:\d+/metrics, health on /healthz", output), output
