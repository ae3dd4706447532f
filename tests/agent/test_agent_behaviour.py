"""Ping, filters, permissions, dedup, per-VM order and parallelism, over the broker."""

import socket
import time

import pytest

from cloudmanagers_plugin.controller import CloudmanagersController
from tests.support.agent import request

pytestmark = pytest.mark.rabbitmq


def test_ping_is_answered_by_the_real_controller(start_agent, requester, tmp_path):
    controller = CloudmanagersController(config_path=str(tmp_path / "absent.conf"), agent_uuid="the-agent")
    agent = start_agent(controller)
    corr = requester.send(request("ping", cm=""), agent.settings.uuid)
    reply = requester.replies(1)[corr]
    assert reply["status"] == {} and "error" not in reply and reply["collection"] == "cloudmanagers"


@pytest.mark.parametrize("filters, answered", [
    ({}, True),
    ({"uuids": ["SELF"]}, True),
    ({"uuids": ["someone-else"]}, False),
    ({"uuids": ["SELF"], "hostnames": [socket.gethostname()]}, True),
    ({"uuids": ["SELF"], "hostnames": ["no-such-host*"]}, False),
    ({"platforms": ["Plan9"]}, False),
    ({"zones": ["eu"]}, False),
], ids=["none", "uuid", "other-uuid", "uuid+host", "wrong-host", "platform", "unknown-only"])
def test_filtered_out_requests_get_no_reply(start_agent, requester, exchange, filters, answered):
    agent = start_agent()
    filters = {key: [agent.settings.uuid if v == "SELF" else v for v in values] for key, values in filters.items()}
    requester.send({**request(n="f"), "filters": filters}, "", exchange=exchange)
    # Admissions run in arrival order: once a later ping is answered, the filtered request was decided.
    probe = requester.send(request("ping", n="probe"), agent.settings.uuid)
    requester.replies(2 if answered else 1)
    replies = [reply for reply in requester.received if reply[1].correlation_id != probe]
    assert len(replies) == int(answered)
    assert agent.controller.executions["f"] == int(answered)


def test_permissions_use_the_amqp_user_id(start_agent, requester, tmp_path):
    rules = tmp_path / "permissions.conf"
    rules.write_text("guest cloudmanagers cm_ro R\nguest cloudmanagers cm_rw CRUD\n* * * -\n")
    agent = start_agent(permissions=str(rules))
    uuid = agent.settings.uuid
    allowed = requester.send(request("read", cm="cm_ro", n="read"), uuid)
    pinged = requester.send(request("ping", cm="cm_ro", n="ping"), uuid)
    denied = requester.send(request("create", cm="cm_ro", n="create"), uuid)
    elsewhere = requester.send(request("delete", cm="cm_rw", n="delete"), uuid)
    replies = requester.replies(4)
    assert "error" not in replies[allowed] and "error" not in replies[pinged] and "error" not in replies[elsewhere]
    assert "permission denied" in replies[denied]["error"]
    assert agent.controller.executions["create"] == 0 and agent.controller.executions["read"] == 1


def test_duplicates_run_once_and_get_the_same_reply(start_agent, requester):
    agent = start_agent()
    uuid = agent.settings.uuid
    body = request("create", n="dup", name="vm-dup", sleep=0.5)
    requester.send(body, uuid, correlation_id="corr-dup")
    requester.send(body, uuid, correlation_id="corr-dup")  # arrives while the first runs
    first = requester.collect(2)
    requester.send(body, uuid, correlation_id="corr-dup")  # a redelivery after the answer
    everything = requester.collect(3)
    assert len(first) == 2 and len(everything) == 3
    assert len({reply_body for _m, _p, reply_body in everything}) == 1
    assert agent.controller.executions["dup"] == 1
    different = requester.send(request("create", n="other", name="vm-dup"), uuid, correlation_id="corr-dup2")
    assert "error" not in requester.replies(2)[different]  # corr-dup and corr-dup2


def test_reads_of_one_vm_run_side_by_side_between_its_changes(start_agent, requester):
    agent = start_agent(workers=8)
    uuid = agent.settings.uuid
    stream = [request("create", name="vm-a", n="create", sleep=0.2),
              request("read", name="vm-a", n="read1", hold="reads"),
              request("read", name="vm-a", n="read2", hold="reads"),
              request("update", name="vm-a", n="update"),
              request("read", name="vm-a", n="read3")]
    for body in stream:
        requester.send(body, uuid)
    deadline = time.monotonic() + 30
    while agent.controller.running < 2 and time.monotonic() < deadline:  # both reads held at once
        time.sleep(0.01)
    both_ran = agent.controller.running == 2
    agent.controller.release("reads")
    assert len(requester.collect(5)) == 5
    order = agent.controller.order["vm-a"]
    assert both_ran
    assert order[0] == "create" and sorted(order[1:3]) == ["read1", "read2"] and order[3:] == ["update", "read3"]


def test_same_vm_in_order_other_vms_in_parallel(start_agent, requester):
    agent = start_agent(workers=8)
    uuid = agent.settings.uuid
    for n, delay in enumerate([0.4, 0.2, 0.0]):
        requester.send(request("update", name="vm-a", n=f"a{n}", sleep=delay), uuid)
    for vm in range(6):  # each waits until all six run at once: serial, they would never finish
        requester.send(request("read", name=f"vm-{vm}", n=f"p{vm}", hold="parallel"), uuid)
    deadline = time.monotonic() + 30
    while agent.controller.running < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    agent.controller.release("parallel")
    assert len(requester.collect(9)) == 9
    assert agent.controller.order["vm-a"] == ["a0", "a1", "a2"]
    assert agent.controller.max_running >= 6
