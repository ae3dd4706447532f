"""What an operator meets first, without a broker: an unreachable one (one line per attempt), the
back-off, and the checks the `cloudmanagers agent` command makes before it connects (issue 16)."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pika
import pytest

from cloudmanagers_plugin.agent.service import AgentService
from cloudmanagers_plugin.agent.transport import Backoff, Consumer, Topology
from tests.support import ROOT
from tests.support.agent import FakeController, agent_lines, agent_settings
from tests.support.agent_command import CM_SECTION, agent_command, finish, write_file


@pytest.mark.parametrize("host, port, reason", [
    ("127.0.0.1", 1, "connection refused on port 1"),
    ("no-such-host.invalid", 5672, "cannot resolve the broker host 'no-such-host.invalid'"),
])
def test_unreachable_broker_one_line_per_attempt(caplog, host, port, reason):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # what `cloudmanagers agent` does below DEBUG
    try:
        settings = agent_settings()
        settings.broker.host, settings.broker.port = host, port
        settings.broker.connection_attempts = 2
        service = AgentService(settings, FakeController())
        assert service.run() == 1
    finally:
        logging.getLogger("pika").setLevel(logging.NOTSET)
    failures = [r for r in agent_lines(caplog) if r.levelno >= logging.WARNING]
    url = f"amqp://guest@{host}:{port}/%2F"
    assert [r.getMessage().split(": ", 1)[0] for r in failures] == [
        f"cannot connect to the broker at {url} (attempt 1 of 2)",
        f"cannot connect to the broker at {url} (attempt 2 of 2)",
    ]
    assert all(reason in r.getMessage() for r in failures)
    assert not [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.WARNING]


class _FakeConnection:
    def __init__(self):
        self.channels = []

    def channel(self, on_open_callback):
        self.channels.append(on_open_callback)


def test_backoff_resets_only_once_consuming():
    backoff = Backoff(cap=5, attempts=100)
    settings = agent_settings()
    topology = Topology(settings.uuid, "", True, 1, "", "", None)
    consumer = Consumer([pika.ConnectionParameters()], topology, None, backoff, settings.broker)
    backoff.next_delay(), backoff.next_delay(), backoff.next_delay()
    consumer._on_connection_open(_FakeConnection())  # TCP and AMQP handshake done, nothing consumed yet
    assert backoff.failures == 3
    consumer._on_consume_ok(None)
    assert backoff.failures == 0


def test_unreadable_agent_config_exits_2(tmp_path):
    agent_config = write_file(os.path.join(tmp_path, "agent.conf"), "[rabbitmq]\nhost = 127.0.0.1\n", mode=0o000)
    code, output = finish(agent_command("--agent-config", agent_config, unreadable_files=True))
    assert code == 2 and f"cannot read the agent config file {agent_config}: Permission denied" in output


def test_unreadable_cloudmanagers_file_exits_2(tmp_path):
    agent_config = write_file(os.path.join(tmp_path, "agent.conf"),
                          f"[rabbitmq]\nhost = 127.0.0.1\nuuid = 3a468145-1afc-40d3-baf5-3ba4c0fc3561\n"
                          f"[agent]\nuuid_file = {tmp_path}/uuid\n", mode=0o644)
    config = write_file(os.path.join(tmp_path, "cloudmanagers.conf"), CM_SECTION, mode=0o000)
    code, output = finish(agent_command("--agent-config", agent_config, "--config", config, unreadable_files=True))
    assert code == 2 and f"{config}: cannot read the cloud managers file: Permission denied" in output
    assert "not a valid INI file" not in output


@pytest.mark.parametrize("config_text, expected", [
    (None, "cannot read the cloud managers file (No such file or directory)"),
    ("# nothing here\n", "no cloud manager section"),
    ("not an ini file\n", "not a valid INI file"),
])
def test_agent_refuses_a_missing_or_invalid_cloudmanagers_file(tmp_path, config_text, expected):
    agent_config = write_file(os.path.join(tmp_path, "agent.conf"),
                          "[rabbitmq]\nhost = 127.0.0.1\nuuid = 3a468145-1afc-40d3-baf5-3ba4c0fc3561\n")
    config = os.path.join(tmp_path, "cloudmanagers.conf")
    if config_text is not None:
        write_file(config, config_text)
    code, output = finish(agent_command("--agent-config", agent_config, "--config", config))
    assert code == 2 and expected in output and config in output


def test_uuid_must_be_a_uuid(tmp_path):
    config = write_file(os.path.join(tmp_path, "cloudmanagers.conf"), CM_SECTION)
    code, output = finish(agent_command("--url", "amqp://127.0.0.1/", "--config", config, "--uuid", "not a uuid"))
    assert code == 2 and "--uuid 'not a uuid' is not a uuid" in output


def test_a_fatal_error_under_systemd_is_an_error_entry(tmp_path):
    """journald reads the ``<3>`` prefix as the priority, so ``journalctl -p err`` shows why it stopped."""
    config = os.path.join(tmp_path, "absent.conf")
    with open(tmp_path / "stderr", "w+", encoding="utf-8") as journal:
        st = os.fstat(journal.fileno())
        command = [sys.executable, "-m", "cloudmanagers_plugin.cli", "agent", "--url", "amqp://127.0.0.1/",
                   "--uuid", "3a468145-1afc-40d3-baf5-3ba4c0fc3561", "--config", config]
        env = {**os.environ, "PYTHONPATH": ROOT, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=journal, env=env, timeout=60).returncode
        journal.seek(0)
        lines = journal.read().splitlines()
    assert code == 2
    assert lines[-1].startswith(f"<3>error: {config}: cannot read the cloud managers file"), lines


def test_a_metrics_address_in_use_stops_the_start_with_exit_2(tmp_path):
    """Two agents of a group on one host with the default address: the second says what to do."""
    config = write_file(os.path.join(tmp_path, "cloudmanagers.conf"), CM_SECTION)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = finish(agent_command("--url", "amqp://127.0.0.1/", "--config", config, "--uuid",
                                            "3a468145-1afc-40d3-baf5-3ba4c0fc3561", "--metrics-listen",
                                            f"127.0.0.1:{port}"))
    assert code == 2, output
    assert f"127.0.0.1:{port}: cannot listen: Address already in use" in output
    assert "--metrics-listen HOST:PORT" in output


def test_a_malformed_metrics_address_stops_the_start_with_exit_2(tmp_path):
    config = write_file(os.path.join(tmp_path, "cloudmanagers.conf"), CM_SECTION)
    code, output = finish(agent_command("--url", "amqp://127.0.0.1/", "--config", config, "--metrics-listen", "9465"))
    assert code == 2 and "must be HOST:PORT" in output and "got '9465'" in output


def test_health_is_503_while_the_broker_cannot_be_reached():
    settings = agent_settings(metrics_listen="127.0.0.1:0")
    settings.broker.port = 1  # nothing listens there
    service = AgentService(settings, FakeController())
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen("http://127.0.0.1:%d/healthz" % service.metrics_address[1], timeout=5)
        assert refused.value.code == 503
        assert json.loads(refused.value.read()) == {"status": "unavailable", "role": "disconnected", "broker": None,
                                                    "consuming": False}
    finally:
        service.request_stop()
        runner.join(10)
    assert not runner.is_alive()
