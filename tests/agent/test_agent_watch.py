"""`cloudmanagers watch` against the real RabbitMQ (issue 10): it prints the events published on
the events exchange, filters by cloud manager, ends 0 on Ctrl-C, and says when there is no exchange."""

import json
import os
import signal
import subprocess
import sys

import pika
import pytest

from tests.support import ROOT
from tests.support.agent import temporary_exchange, unique

pytestmark = pytest.mark.rabbitmq


def event(section, sequence, status="SHUTOFF"):
    return {"uuid": "agent", "collection": "cloudmanagers", "resource_id": section, "msg_type": "status",
            "version": "1", "status": {"vm_event": "changed", "sequence": sequence, "vm_name": "web", "vm_id": "1",
                                       "vm_status": status, "vm_task_state": None, "vm_flavor_name": "m1.tiny"}}


@pytest.fixture
def exchange(broker):
    with temporary_exchange("watch-test-events", "topic") as name:
        yield name


def start_watch(*args):
    return subprocess.Popen([sys.executable, "-m", "cloudmanagers_plugin.cli", "watch", "--url",
                             "amqp://guest:guest@127.0.0.1/", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": ROOT})


def bound(process):
    """Wait until the watch's queue is bound: it says so on stderr once it is."""
    line = process.stderr.readline()
    assert "watching the change events" in line, line + process.stderr.read()


def publish(exchange, *messages):
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        channel = connection.channel()
        for message in messages:
            channel.basic_publish(exchange, "cm.events", json.dumps(message).encode())


def test_watch_prints_one_line_per_event_of_the_cloud_manager_asked(exchange):
    process = start_watch("cm_a", "--exchange", exchange, "--routing-key", "cm.events", "--count", "2")
    try:
        bound(process)
        publish(exchange, event("cm_b", 1), {"collection": "docks", "msg_type": "status"}, event("cm_a", 7),
                event("cm_a", 8, "ACTIVE"))
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert [line.split()[1:6] for line in out.splitlines()] == [["cm_a", "#7", "changed", "web", "SHUTOFF"],
                                                              ["cm_a", "#8", "changed", "web", "ACTIVE"]]


def test_watch_json_and_ctrl_c_exits_0(exchange):
    process = start_watch("--exchange", exchange, "--routing-key", "#", "--json")
    try:
        bound(process)
        publish(exchange, event("cm_a", 1))
        line = process.stdout.readline()  # the process is killed in finally if this never comes
        assert json.loads(line)["status"]["sequence"] == 1
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()


def test_watch_of_a_missing_exchange_exits_3(broker):
    process = start_watch("--exchange", unique("no-such-exchange"))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 3 and "no exchange" in err
