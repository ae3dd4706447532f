"""What an operator meets first: broker mistakes at start, per-request log lines, queue expiry,
systemd readiness, and the agent's own start-up checks (issue 16)."""

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import pika
import pytest

from cloudmanagers_plugin.agent.service import AgentService
from cloudmanagers_plugin.agent.transport import Backoff, Consumer, Topology
from cloudmanagers_plugin.controller import CloudmanagersController
from tests.support import ROOT
from tests.support.agent import FakeController, agent_settings, delete_queue, request, unique, wait_for_consumer

AGENT_LOG = "cloudmanagers_plugin.agent"


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


def agent_lines(caplog):
    return [record for record in caplog.records if record.name == AGENT_LOG]


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
    consumer = Consumer(pika.ConnectionParameters(), topology, None, backoff, settings.broker)
    backoff.next_delay(), backoff.next_delay(), backoff.next_delay()
    consumer._on_connection_open(_FakeConnection())  # TCP and AMQP handshake done, nothing consumed yet
    assert backoff.failures == 3
    consumer._on_consume_ok(None)
    assert backoff.failures == 0


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


# -- the `cloudmanagers agent` command checks its files before it connects -------------------


# Root reads any file through these two capabilities; without them it meets "permission denied"
# on a file of mode 000 while still reaching the interpreter and the checkout, wherever they are.
_NO_FILE_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                     "--bounding-set=-dac_override,-dac_read_search"]


def _agent_command(*args, env=None, unreadable_files=False):
    command = [sys.executable, "-m", "cloudmanagers_plugin.cli", "agent", *args]
    if unreadable_files and os.geteuid() == 0:
        command = [*_NO_FILE_OVERRIDE, *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def _finish(process, timeout=30):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"the agent kept running:\n{output}")
    return process.returncode, output


@pytest.fixture
def shared_dir():
    """A directory any user may enter (pytest's tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix="cm-agent-test-")
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["rm", "-rf", path], check=True)


def _write(path, text, mode=0o600):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)
    return path


CM_SECTION = ("[cm1]\ncm_type = openstack\nkeystone_base_url = http://127.0.0.1:5000/v3\nproject_name = demo\n"
              "username = demo\npassword = secret\ncompute_api_version = 2.60\n[cm2]\ncm_type = openstack\n")


def test_unreadable_agent_config_exits_2(shared_dir):
    agent_config = _write(os.path.join(shared_dir, "agent.conf"), "[rabbitmq]\nhost = 127.0.0.1\n", mode=0o000)
    code, output = _finish(_agent_command("--agent-config", agent_config, unreadable_files=True))
    assert code == 2 and f"cannot read the agent config file {agent_config}: Permission denied" in output


def test_unreadable_cloudmanagers_file_exits_2(shared_dir):
    agent_config = _write(os.path.join(shared_dir, "agent.conf"),
                          f"[rabbitmq]\nhost = 127.0.0.1\nuuid = 3a468145-1afc-40d3-baf5-3ba4c0fc3561\n"
                          f"[agent]\nuuid_file = {shared_dir}/uuid\n", mode=0o644)
    config = _write(os.path.join(shared_dir, "cloudmanagers.conf"), CM_SECTION, mode=0o000)
    code, output = _finish(_agent_command("--agent-config", agent_config, "--config", config, unreadable_files=True))
    assert code == 2 and f"{config}: cannot read the cloud managers file: Permission denied" in output
    assert "not a valid INI file" not in output


@pytest.mark.parametrize("config_text, expected", [
    (None, "cannot read the cloud managers file (No such file or directory)"),
    ("# nothing here\n", "no cloud manager section"),
    ("not an ini file\n", "not a valid INI file"),
])
def test_agent_refuses_a_missing_or_invalid_cloudmanagers_file(shared_dir, config_text, expected):
    agent_config = _write(os.path.join(shared_dir, "agent.conf"),
                          f"[rabbitmq]\nhost = 127.0.0.1\nuuid = 3a468145-1afc-40d3-baf5-3ba4c0fc3561\n")
    config = os.path.join(shared_dir, "cloudmanagers.conf")
    if config_text is not None:
        _write(config, config_text)
    code, output = _finish(_agent_command("--agent-config", agent_config, "--config", config))
    assert code == 2 and expected in output and config in output


def test_uuid_must_be_a_uuid(shared_dir):
    config = _write(os.path.join(shared_dir, "cloudmanagers.conf"), CM_SECTION)
    code, output = _finish(_agent_command("--url", "amqp://127.0.0.1/", "--config", config, "--uuid", "not a uuid"))
    assert code == 2 and "--uuid 'not a uuid' is not a uuid" in output


@pytest.mark.rabbitmq
def test_agent_logs_version_and_sections_at_start(broker, shared_dir):
    uuid = "5d0c1b9e-6f0e-4c57-9d3e-" + os.urandom(6).hex()
    agent_config = _write(os.path.join(shared_dir, "agent.conf"),
                          f"[rabbitmq]\nhost = 127.0.0.1\nuuid = {uuid}\nexchange =\n[agent]\nworker = 2\n")
    config = _write(os.path.join(shared_dir, "cloudmanagers.conf"), CM_SECTION)
    process = _agent_command("--agent-config", agent_config, "--config", config)
    try:
        wait_for_consumer(uuid, timeout=20)
        process.send_signal(signal.SIGTERM)
        code, output = _finish(process)
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


def test_a_fatal_error_under_systemd_is_an_error_entry(shared_dir, tmp_path):
    """journald reads the ``<3>`` prefix as the priority, so ``journalctl -p err`` shows why it stopped."""
    config = os.path.join(shared_dir, "absent.conf")
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
