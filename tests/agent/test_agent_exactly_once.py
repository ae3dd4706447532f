"""Two agent processes in sequence on one queue (real RabbitMQ, an HTTP fake of OpenStack): the
first is killed after its create reached the cloud and before it answered; the broker
redelivers the request to the second, which answers the first one's success, with no second VM,
and whose /metrics and /healthz say what happened."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid as uuidlib

import pytest

from cloudmanagers_plugin.controller import CREATE_MARK
from tests.support import ROOT
from tests.support.agent import delete_queue, request, wait_for_consumer
from tests.support.agent_command import write_file
from tests.support.fakecloud import IMAGE_ID
from tests.support.httpcloud import HTTPCloud
from tests.support.metrics import value

pytestmark = pytest.mark.rabbitmq


class AgentProcess:
    """`cloudmanagers agent` on a given queue, its output in a file, metrics on a port of its own."""

    def __init__(self, tmp_path, agent_uuid, config, number):
        self.log = os.path.join(tmp_path, f"agent-{number}.log")
        agent_config = write_file(os.path.join(tmp_path, f"agent-{number}.conf"),
                                  f"[rabbitmq]\nhost = 127.0.0.1\nuuid = {agent_uuid}\nexchange =\npublish_exchange =\n"
                                  "[agent]\nmetrics_listen = 127.0.0.1:0\n")
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cloudmanagers_plugin.cli", "agent", "--agent-config", agent_config,
                 "--config", config], stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": ROOT})
        wait_for_consumer(agent_uuid, timeout=30)

    def output(self):
        with open(self.log, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def url(self, path):
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.output()).group(1)
        return f"http://127.0.0.1:{port}{path}"

    def get(self, path):
        with urllib.request.urlopen(self.url(path), timeout=5) as response:
            return response.status, response.read().decode()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def cloud():
    served = HTTPCloud().start()
    yield served
    served.close()


def test_the_next_agent_answers_the_create_the_killed_one_sent(broker, requester, cloud, tmp_path):
    agent_uuid = str(uuidlib.uuid4())
    config = write_file(os.path.join(tmp_path, "cloudmanagers.conf"), cloud.section())
    cloud.hold_creates()
    first = AgentProcess(tmp_path, agent_uuid, config, 1)
    second = None
    try:
        correlation_id = requester.send(request("create", name="web", flavor="1", image=IMAGE_ID), agent_uuid)
        assert cloud.created.wait(30), first.output()  # the create reached the cloud; its answer is held
        first.process.kill()  # SIGKILL: no reply, no ack, the answer cache gone
        first.process.wait(10)
        cloud.release()
        (vm,) = cloud.cloud.servers.values()
        assert vm["metadata"] == {CREATE_MARK: correlation_id}
        second = AgentProcess(tmp_path, agent_uuid, config, 2)
        replies = requester.replies(1, timeout=30)
        assert replies[correlation_id]["status"] == {"cloudmanager": "cm1", "created": True, "vm_name": "web",
                                                      "vm_status": "ACTIVE", "vm_id": vm["id"]}, second.output()
        time.sleep(0.5)
        assert len(requester.received) == 1 and len(cloud.cloud.created_bodies) == 1
        assert list(cloud.cloud.servers) == [vm["id"]]

        status, health = second.get("/healthz")
        assert status == 200 and json.loads(health) == {"status": "ok", "role": "active",
                                                        "broker": "127.0.0.1:5672", "consuming": True}
        _, metrics = second.get("/metrics")
        assert value(metrics, "cloudmanagers_agent_redeliveries_total") == 1
        assert value(metrics, "cloudmanagers_agent_requests_total", action="create", outcome="ok") == 1
        assert value(metrics, "cloudmanagers_agent_request_duration_seconds_count", action="create") == 1
        assert value(metrics, "cloudmanagers_agent_requests_in_flight") == 0
        assert value(metrics, "cloudmanagers_openstack_token_requests_total", cloud_manager="cm1") == 1
        assert value(metrics, "cloudmanagers_openstack_requests_total", cloud_manager="cm1", method="GET",
                     code="200") > 0
        assert value(metrics, "cloudmanagers_openstack_requests_total", cloud_manager="cm1", method="POST",
                     code="202") == 0  # no second create
    finally:
        first.stop()
        if second:
            second.stop()
        delete_queue(agent_uuid)
