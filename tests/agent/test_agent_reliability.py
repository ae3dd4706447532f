"""Broker-side connection kills mid-stream, and SIGTERM draining of a subprocess agent."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import ROOT
from tests.support.agent import (
    AgentThread, FakeController, agent_settings, close_connection_named, delete_queue, request, unique,
    wait_for_consumer,
)

pytestmark = pytest.mark.rabbitmq


def test_connection_kills_lose_no_reply_and_run_nothing_twice(start_agent, requester):
    agent = start_agent(workers=8)
    uuid = agent.settings.uuid
    thresholds = (30, 100)

    def hold(n):  # requests past a threshold wait until the connection was killed there
        return next((f"after-{threshold}" for threshold in reversed(thresholds) if n >= threshold), None)

    sent = [requester.send(request("create", n=n, name=f"vm-{n % 20}", hold=hold(n)), uuid) for n in range(200)]
    for threshold in thresholds:
        requester.replies(threshold, timeout=30)
        wait_for_consumer(uuid)
        assert close_connection_named(f"cloudmanagers-agent {uuid}") == 1
        assert len(requester.replies(0)) < 200  # the kill happened mid-stream
        agent.controller.release(f"after-{threshold}")
    replies = requester.replies(200, timeout=60)
    assert set(replies) == set(sent)
    assert all("error" not in reply for reply in replies.values())
    executions = agent.controller.executions
    assert sorted(executions) == list(range(200)) and set(executions.values()) == {1}, executions.most_common(3)
    assert agent.thread.is_alive()


def test_sigterm_finishes_the_request_in_flight_then_exits_0(broker, requester):
    uuid = unique("agent-test-sigterm")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.agent_process", uuid], env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_consumer(uuid, timeout=20)
        slow = requester.send(request("create", n="slow", name="vm-slow", sleep=2.0), uuid)
        time.sleep(0.5)  # the request is now running on a worker
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = requester.send(request("read", n="late"), uuid)  # must not be taken any more
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        replies = requester.replies(1, timeout=5)
        assert slow in replies and "error" not in replies[slow]
        assert late not in replies
        assert requester.channel.queue_declare(uuid, passive=True).method.message_count == 1  # "late" waits
        assert "stopping" in output and "stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
        delete_queue(uuid)


def test_heartbeats_flow_while_a_long_request_runs(broker, requester, caplog):
    settings = agent_settings(exchange="")
    settings.broker.heartbeat = 1  # the broker drops a connection silent for ~2 heartbeats
    agent = AgentThread(settings, FakeController())
    try:
        corr = requester.send(request("create", n="long", name="vm-long", sleep=6), settings.uuid)
        reply = requester.replies(1, timeout=15)[corr]
        assert "error" not in reply and agent.controller.executions["long"] == 1
        assert "connection to the broker lost" not in caplog.text
    finally:
        agent.stop()
        delete_queue(settings.uuid)
