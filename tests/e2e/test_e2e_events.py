"""Issue 10's change events end to end: a VM created, paused, stopped, resized and deleted directly
with novaclient (outside the agent) is reported by the agent's events, through the real RabbitMQ,
with the VM-details keys, and shown by `cloudmanagers watch`; the agent restarted mid-stream loses
no transition and repeats none. A VM created and deleted between two polls is reported once, as
created then deleted."""

import configparser
import json
import os
import subprocess
import sys
import time

import pytest

from cloudmanagers_plugin.changes import fingerprint
from tests.support import ROOT
from tests.support.agent import EventListener, temporary_exchange
from tests.support.e2e import (harness, real_status, settle, wait_for_first_delta_list,
                                wait_for_first_full_list)

pytestmark = pytest.mark.e2e

DETAIL_KEYS = {"cloudmanager", "url", "vm_name", "vm_id", "vm_status", "vm_task_state", "vm_vcpus", "vm_flavor",
               "vm_flavor_name", "vm_vnc_port", "vm_console_url", "vm_addresses", "vm_image", "vm_key_name",
               "vm_availability_zone", "vm_metadata", "vm_tags", "vm_created", "vm_updated", "vm_event", "sequence"}
SECTION = "devcloud"


@pytest.fixture
def events_exchange():
    with temporary_exchange("e2e-events") as name:
        yield name


@pytest.fixture
def polling_config(facts, tmp_path):
    """The devcloud's v3 section alone, without a notification bus: these events come from polling."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(facts["cloudmanagers_conf"])
    section = {key: value for key, value in parser[SECTION].items() if not key.startswith("notifications")}
    path = tmp_path / "cloudmanagers.conf"
    path.write_text(f"[{SECTION}]\n" + "".join(f"{key} = {value}\n" for key, value in section.items()))
    os.chmod(path, 0o600)
    return str(path)


def start_agent(workdir, config, exchange, agent_uuid=None, poll_interval=1):
    agent = harness.Agent(workdir, config, agent_uuid, events={"exchange": exchange, "poll_interval": poll_interval,
                                                   "reconcile_interval": 600}).start()
    wait_for_first_full_list(agent, (SECTION,))
    return agent


class Stream:
    """One VM's events as they come; ``next`` waits for its next state at rest (no task under way)."""

    def __init__(self, listener, vm_id, log):
        self.listener, self.vm_id, self.seen, self.log = listener, vm_id, 0, log

    def events(self):
        return [body["status"] for body in self.listener.bodies()
                if body["resource_id"] == SECTION and body["status"]["vm_id"] == self.vm_id]

    def next(self, status, flavor=None, timeout=60):
        def match(event):
            return event["vm_status"] == status and not event["vm_task_state"] and flavor in (None, event["vm_flavor_name"])

        try:
            self.listener.wait(lambda _bodies: any(match(e) for e in self.events()[self.seen:]), timeout)
        except AssertionError:
            seen = [(e["sequence"], e["vm_status"], e["vm_task_state"]) for e in self.events()]
            raise AssertionError(f"no {status} event; this VM's: {seen}; the agent's log:\n{self.log()}") from None
        found = next(index for index, e in enumerate(self.events()) if index >= self.seen and match(e))
        self.seen = found + 1
        return self.events()[found]


def test_changes_made_with_novaclient_are_events_and_survive_a_restart(facts, nova, vm_name, polling_config,
                                                                      events_exchange, tmp_path):
    listener = EventListener(events_exchange)
    env = {**os.environ, "PYTHONPATH": ROOT}
    watch = subprocess.Popen([sys.executable, "-m", "cloudmanagers_plugin.cli", "watch", SECTION, "--url",
                              "amqp://guest:guest@127.0.0.1/", "--exchange", events_exchange, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    workdir = str(tmp_path / "agent")
    agent = start_agent(workdir, polling_config, events_exchange)
    vm_id = None
    try:
        assert "watching the change events" in watch.stderr.readline()
        vm_id = nova.servers.create(vm_name, facts["image_id"], "1", nics="auto").id
        stream = Stream(listener, vm_id, lambda: agent.tail())
        listener.wait(lambda _bodies: stream.events())
        created = stream.events()[0]
        assert created["vm_event"] == "created" and created["vm_name"] == vm_name
        active = stream.next("ACTIVE")
        assert DETAIL_KEYS <= set(active) and active["vm_flavor_name"] == "m1.tiny"
        assert active["cloudmanager"] == SECTION and active["vm_image"] == facts["image_id"]

        nova.servers.pause(vm_id)
        stream.next("PAUSED")
        nova.servers.unpause(vm_id)
        stream.next("ACTIVE")
        nova.servers.stop(vm_id)
        stream.next("SHUTOFF")

        agent.stop()  # mid-stream: SIGTERM; what was in flight is confirmed and saved
        nova.servers.start(vm_id)  # while no agent watches
        assert settle(nova, vm_id, "ACTIVE")[0] == "ACTIVE"
        agent = start_agent(workdir, polling_config, events_exchange, agent.uuid)
        assert stream.next("ACTIVE")["vm_event"] == "changed"  # found by the restarted agent's first full list

        nova.servers.resize(vm_id, "2")
        resized = stream.next("VERIFY_RESIZE", flavor="m1.small")
        assert resized["vm_vcpus"] == 1 and resized["vm_flavor"] == "2"
        nova.servers.confirm_resize(vm_id)
        stream.next("ACTIVE", flavor="m1.small")
        nova.servers.delete(vm_id)
        deleted = stream.next("DELETED")
        assert deleted["vm_event"] == "deleted" and deleted["vm_name"] == vm_name
        vm_id = None

        time.sleep(3)  # a few more polls: nothing may come twice
        listener.connection.process_data_events(time_limit=0.5)
        events = [body["status"] for body in listener.bodies() if body["resource_id"] == SECTION]
        sequences = [event["sequence"] for event in events]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), sequences  # no gap, no repeat
        mine = [fingerprint(event) for event in stream.events()]
        assert all(a != b for a, b in zip(mine, mine[1:]))  # no state of the VM reported twice in a row
        watched = []
        while len(watched) < len(events):
            line = watch.stdout.readline()
            assert line, watch.stderr.read()
            watched.append(json.loads(line)["status"]["sequence"])
        assert watched == sequences
    finally:
        watch.kill()
        listener.close()
        agent.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", agent.uuid], capture_output=True)
        if vm_id:
            nova.servers.delete(vm_id)


def test_a_vm_created_and_deleted_between_two_polls_is_reported_once(facts, nova, vm_name, polling_config,
                                                                     events_exchange, tmp_path):
    poll = 10  # seconds: time enough to boot a VM and delete it between two polls
    listener = EventListener(events_exchange)
    workdir = str(tmp_path / "agent")
    agent = start_agent(workdir, polling_config, events_exchange, poll_interval=poll)
    vm_id = None

    def mine():
        return [body["status"] for body in listener.bodies()
                if body["resource_id"] == SECTION and body["status"]["vm_id"] == vm_id]

    try:
        wait_for_first_delta_list(agent, SECTION)  # a poll just ran: the next one is `poll` seconds away
        vm_id = nova.servers.create(vm_name, facts["image_id"], "1", nics="auto").id
        settle(nova, vm_id, "ACTIVE")
        nova.servers.delete(vm_id)
        deadline = time.monotonic() + 30
        while real_status(nova, vm_id)[0] != "DELETED":
            assert time.monotonic() < deadline, f"server {vm_id} not deleted"
            time.sleep(0.2)
        try:
            listener.wait(lambda _bodies: any(e["vm_event"] == "deleted" for e in mine()), poll + 30)
        except AssertionError:
            raise AssertionError(f"no deleted event for {vm_id}; the agent's log:\n{agent.tail()}") from None
        created, deleted = mine()
        # the created event carries what Nova lists: the agent never saw the VM alive
        assert (created["vm_event"], created["vm_status"], deleted["vm_event"], deleted["vm_status"]) == \
            ("created", "DELETED", "deleted", "DELETED"), (created, deleted)
        assert deleted["sequence"] == created["sequence"] + 1
        assert DETAIL_KEYS <= set(created) and created["vm_name"] == vm_name and created["vm_flavor_name"] == "m1.tiny"

        agent.stop()  # its memory of the deletion is saved with the confirmed state
        agent = start_agent(workdir, polling_config, events_exchange, agent.uuid, poll_interval=poll)
        listener.listen(2 * poll + 2)  # two more polls, each listing the DELETED record again
        assert [(e["vm_event"], e["sequence"]) for e in mine()] == \
            [("created", created["sequence"]), ("deleted", deleted["sequence"])]
        vm_id = None
    finally:
        listener.close()
        agent.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", agent.uuid], capture_output=True)
        if vm_id and real_status(nova, vm_id)[0] != "DELETED":
            nova.servers.delete(vm_id)
