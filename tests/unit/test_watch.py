"""`cloudmanagers watch` without a broker (issue 10): how an event prints, and the refusals."""

import os
import subprocess
import sys

from cloudmanagers_plugin.render import event_line
from tests.support import ROOT

EVENT = {"uuid": "3a46", "collection": "cloudmanagers", "resource_id": "cm_openstack", "msg_type": "status",
         "status": {"vm_event": "changed", "sequence": 42, "vm_name": "haproxy", "vm_id": "0b8c", "vm_status": "ERROR",
                    "vm_task_state": None, "vm_flavor_name": "m1.small", "vm_fault": "No valid host was found"}}


def watch(*args):
    return subprocess.run([sys.executable, "-m", "cloudmanagers_plugin.cli", "watch", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})


def test_an_event_is_one_line_with_the_fixed_columns_first():
    line = event_line(EVENT, "2026-11-26T01:00:00Z")
    assert line == ('2026-11-26T01:00:00Z  cm_openstack  #42  changed  haproxy  ERROR  task=- flavor=m1.small '
                    'fault="No valid host was found" id=0b8c')


def test_a_compliance_message_shows_desired_and_current():
    message = {"resource_id": "cm", "msg_type": "compliance_error", "reason": "stopped outside",
               "status": {"vm_name": "web", "vm_id": "1", "vm_status": "ACTIVE"},
               "current_status": {"vm_status": "SHUTOFF"}}
    assert event_line(message, "T") == 'T  cm  compliance_error  web  desired=ACTIVE current=SHUTOFF ' \
                                       'reason="stopped outside" id=1'


def test_events_on_the_default_exchange_cannot_be_watched(tmp_path):
    config = tmp_path / "agent.conf"
    config.write_text("[rabbitmq]\npublish_exchange =\npublish_routing_key = inbox-queue\n")
    result = watch("--agent-config", str(config))
    assert result.returncode == 2 and "default exchange" in result.stderr and "[events] exchange" in result.stderr


def test_an_unreachable_broker_exits_4():
    result = watch("--url", "amqp://guest:guest@127.0.0.1:1/", "--exchange", "events")
    assert result.returncode == 4 and "cannot reach the broker" in result.stderr
