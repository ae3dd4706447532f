"""Nova's versioned notifications and monitored desired state, end to end.

The devcloud's Nova notifies on its own vhost; the agent listens there with a RabbitMQ user of
its own (made here), so a test can switch the notifications off by taking that user's
permissions and closing the listener's connection, and on again. VMs are changed directly with
novaclient, as someone in Horizon would; the events and compliance messages are read from an
exchange of the test's own.
"""

import json
import os
import subprocess
import time
import urllib.parse
import uuid

import pytest

from tests.support.agent import EventListener, about, close_connection_named, connections_named, temporary_exchange
from tests.support.e2e import NovaTap, harness, settle, wait_for_first_full_list

FAST = "devcloud_notified"  # notifications on, polling every 300 s: a quick event can only be a notification
REMEDIATE = "devcloud_remediate"
SWITCHED = "devcloud_switched"  # notifications on and off, polling every 3 s
POLLED_REMEDIATE = "devcloud_polled_remediate"  # notifications on, remediate = true, polling every 3 s
POLL_SECONDS = 3
LATE = "devcloud_late"  # its bus named while the agent runs, polling every 30 s
LATE_POLL_SECONDS = 30


def rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def bus(facts):
    """A RabbitMQ user of the test's own on the devcloud's vhost: (url, user, vhost)."""
    user, password = f"cm-e2e-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    vhost = facts["rabbitmq"]["vhost"]
    rabbitmqctl("add_user", user, password)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    yield f"rabbit://{user}:{password}@127.0.0.1:{facts['ports']['rabbit']}/{vhost}", user, vhost
    subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True)


@pytest.fixture(scope="module")
def events_exchange(facts):
    with temporary_exchange("test-events", "topic") as name:
        yield name


@pytest.fixture(scope="module")
def events(events_exchange):
    queue = EventListener(events_exchange, "#")
    yield queue
    queue.close()


def _config(path, facts, bus_url, sections):
    """Write the cloud managers file at once (an agent may be reading it); ``bus_url`` None: the
    sections name no bus, polling alone."""
    demo = facts["credentials"]["demo"]
    bus_keys = (f"notifications_url = {bus_url}\nnotifications_exchange = {facts['notifications']['exchange']}\n"
                if bus_url else "")
    text = "".join(
        f"[{name}]\ncm_type = openstack\nkeystone_base_url = {facts['auth_url']}\n"
        f"project_name = {demo['project_name']}\nusername = {demo['username']}\npassword = {demo['password']}\n"
        f"{bus_keys}{extra}\n"
        for name, extra in sections.items())
    written = path.with_name(path.name + ".new")
    written.write_text(text)
    written.chmod(0o600)
    os.replace(written, path)
    return str(path)


def _agent(tmp_path_factory, config, exchange, poll_interval, sections):
    workdir = str(tmp_path_factory.mktemp("agent"))
    running = harness.Agent(workdir, config, events={"exchange": exchange, "poll_interval": poll_interval}).start()
    _wait_log(running, "listening to Nova's notifications", 30)
    wait_for_first_full_list(running, sections)
    return running


def _wait_log(agent, text, timeout):
    deadline = time.monotonic() + timeout
    while text not in agent.tail(10 ** 6):
        assert time.monotonic() < deadline, f"'{text}' not in the agent's log:\n{agent.tail()}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fast_agent(facts, bus, events_exchange, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("fast") / "cloudmanagers.conf", facts, bus[0],
                     {FAST: "", REMEDIATE: "remediate = true\n"})
    running = _agent(tmp_path_factory, config, events_exchange, 300, (FAST, REMEDIATE))
    yield running
    running.stop()
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)


@pytest.fixture(scope="module")
def switched_agent(facts, bus, events_exchange, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("switched") / "cloudmanagers.conf", facts, bus[0], {SWITCHED: ""})
    running = _agent(tmp_path_factory, config, events_exchange, POLL_SECONDS, (SWITCHED,))
    yield running
    running.stop()
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)


@pytest.fixture(scope="module")
def polled_agent(facts, bus, events_exchange, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("polled") / "cloudmanagers.conf", facts, bus[0],
                     {POLLED_REMEDIATE: "remediate = true\n"})
    running = _agent(tmp_path_factory, config, events_exchange, POLL_SECONDS, (POLLED_REMEDIATE,))
    yield running
    running.stop()
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)


@pytest.fixture(scope="module")
def tap(facts):
    """Nova's own notifications: when each change happened (the agent's part is timed from there)."""
    nova_bus = NovaTap(facts["notifications"]["url"], facts["notifications"]["exchange"])
    yield nova_bus
    nova_bus.close()


@pytest.fixture
def boot(nova, facts):
    """boot() -> an ACTIVE server made directly with novaclient (deleted at the end)."""
    made = []

    def run():
        server = nova.servers.create(f"e2e-n-{uuid.uuid4().hex[:8]}", facts["image_id"], facts["flavor_ids"]["m1.tiny"],
                                     nics="none")
        made.append(server.id)
        settle(nova, server.id, "ACTIVE")
        return server.id

    yield run
    for server_id in made:
        try:
            nova.servers.delete(server_id)
        except Exception:
            pass


def _change(nova, server_id, action):
    """Stop/start/pause... a server as someone outside the controller does; the moment it was asked."""
    asked = time.monotonic()
    getattr(nova.servers, action)(server_id)
    return asked


def test_a_vm_stopped_outside_is_reported_well_under_a_second(fast_agent, events, tap, nova, boot):
    """Timed from Nova's own announcement that the change is done (its pace varies with the load on
    the machine; the agent's part should not); polling every 300 s could not tell within seconds."""
    vm = boot()
    events.first(about(fast_agent.uuid, FAST, vm, vm_status="ACTIVE", vm_task_state=None), 30)
    latencies = []
    for action, status, ended in (("stop", "SHUTOFF", "power_off"), ("start", "ACTIVE", "power_on"),
                                  ("pause", "PAUSED", "pause")):
        asked = _change(nova, vm, action)
        arrived, event = events.first(about(fast_agent.uuid, FAST, vm, vm_status=status, vm_task_state=None), 30,
                                      after=asked)
        done = tap.ended(vm, ended, after=asked, timeout=5)
        assert done is not None, f"Nova announced no instance.{ended}.end"
        latencies.append(arrived - done)
        assert event["status"]["vm_event"] == "changed" and event["status"]["vm_id"] == vm
        settle(nova, vm, status)
    assert max(latencies) < 1.0, latencies


def test_notifications_switched_off_then_on(switched_agent, bus, events, tap, nova, boot):
    _url, user, vhost = bus
    vm = boot()
    events.first(about(switched_agent.uuid, SWITCHED, vm, vm_status="ACTIVE", vm_task_state=None), 30)
    listener = f"cloudmanagers-agent {switched_agent.uuid} notifications {SWITCHED}"
    rabbitmqctl("clear_permissions", "-p", vhost, user)
    try:
        assert close_connection_named(listener) == 1
        _wait_log(switched_agent, "polling carries on", 15)
        asked = _change(nova, vm, "stop")
        # polling alone: within an interval (and Nova's own time, which load stretches)
        events.first(about(switched_agent.uuid, SWITCHED, vm, vm_status="SHUTOFF"), POLL_SECONDS + 30, after=asked)
        settle(nova, vm, "SHUTOFF")
    finally:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    _wait_log(switched_agent, "listening again to Nova's notifications", 75)
    asked = _change(nova, vm, "start")
    arrived, _event = events.first(about(switched_agent.uuid, SWITCHED, vm, vm_status="ACTIVE",
                                         vm_task_state=None), 30, after=asked)
    done = tap.ended(vm, "power_on", after=asked, timeout=5)
    assert done is not None and arrived - done < 1.0
    assert urllib.parse.urlsplit(bus[0]).password not in switched_agent.tail(10 ** 6)  # never logged
    assert f"{user}:***@" in switched_agent.tail(10 ** 6)


def test_a_bus_named_while_the_agent_runs_is_listened_to_without_a_restart(facts, bus, events_exchange, events, tap,
                                                                          nova, boot, tmp_path_factory):
    """The listeners follow the cloud managers file at the polling's pace: once the section names its
    bus, changes come within a second though the next poll may be 30 s away; once it no longer
    does, the listener's connection goes."""
    path = tmp_path_factory.mktemp("late") / "cloudmanagers.conf"
    _config(path, facts, None, {LATE: ""})
    running = harness.Agent(str(tmp_path_factory.mktemp("agent")), str(path),
                            events={"exchange": events_exchange, "poll_interval": LATE_POLL_SECONDS}).start()
    listener = f"cloudmanagers-agent {running.uuid} notifications {LATE}"
    try:
        wait_for_first_full_list(running, (LATE,))
        vm = boot()
        events.first(about(running.uuid, LATE, vm, vm_status="ACTIVE", vm_task_state=None), LATE_POLL_SECONDS + 30)
        assert "listening to Nova's notifications" not in running.tail(10 ** 6)  # polling alone so far
        _config(path, facts, bus[0], {LATE: ""})
        _wait_log(running, f"section '{LATE}': listening to Nova's notifications", LATE_POLL_SECONDS + 30)
        for action, status, ended in (("stop", "SHUTOFF", "power_off"), ("start", "ACTIVE", "power_on")):
            asked = _change(nova, vm, action)
            arrived, _event = events.first(about(running.uuid, LATE, vm, vm_status=status, vm_task_state=None), 30,
                                           after=asked)
            done = tap.ended(vm, ended, after=asked, timeout=5)
            assert done is not None and arrived - done < 1.0  # a notification's pace, not the polling's
            settle(nova, vm, status)
        _config(path, facts, None, {LATE: ""})
        _wait_log(running, f"section '{LATE}': no longer listening to Nova's notifications", LATE_POLL_SECONDS + 30)
        deadline = time.monotonic() + 10
        while connections_named(listener):
            assert time.monotonic() < deadline, "the listener's connection stayed open"
            time.sleep(0.2)
        assert urllib.parse.urlsplit(bus[0]).password not in running.tail(10 ** 6)  # never logged
    finally:
        running.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", running.uuid], capture_output=True)


def _monitored(agent, action, section, **attributes):
    """A request sent with ``monitor: true``; its reply's status."""
    result = harness.cloudmanagers(*agent.command(action, section, **attributes), "--monitor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["status"]


def _create_monitored(agent, section, name, facts):
    return _monitored(agent, "create", section, name=name, flavor="m1.tiny", image=facts["image"]["name"], wait=60,
                      networks="none")


def test_a_monitored_vm_stopped_outside_drifts_and_comes_back(fast_agent, events, nova, facts, vm_name):
    _create_monitored(fast_agent, FAST, vm_name, facts)
    vm = nova.servers.find(name=vm_name).id
    try:
        asked = _change(nova, vm, "stop")
        _arrived, error = events.first(about(fast_agent.uuid, FAST, vm, "compliance_error"), 30, after=asked)
        assert error["status"] == {"vm_id": vm, "vm_name": vm_name, "vm_status": "ACTIVE", "vm_flavor": "1"}
        assert error["current_status"]["vm_status"] == "SHUTOFF" and error["compliant"] is False
        assert error["reason"] == "the VM is SHUTOFF, desired ACTIVE" and error["remediation"] is None
        settle(nova, vm, "SHUTOFF")
        asked = _change(nova, vm, "start")
        _arrived, ok = events.first(about(fast_agent.uuid, FAST, vm, "compliance_ok"), 30, after=asked)
        assert ok["compliant"] is True and ok["back_to_compliance"] is True
        settle(nova, vm, "ACTIVE")
        asked = _change(nova, vm, "delete")
        _arrived, gone = events.first(about(fast_agent.uuid, FAST, vm, "compliance_error"), 30, after=asked)
        assert gone["current_status"]["vm_status"] == "DELETED" and gone["reason"] == "deleted outside the controller"
    finally:
        fast_agent.call("delete", FAST, name=vm, wait=30)


def test_an_update_that_puts_a_drifted_vm_back_or_accepts_its_drift_is_ok_as_it_ends(fast_agent, events, nova, facts, vm_name):
    """A monitored VM paused outside (no remediation) is a drift; `update {status: ACTIVE, wait}`
    through the agent puts it back. Nova's notifications of the unpause come while the update
    waits, so they are judged as it ends: compliance_ok follows its reply within seconds, where
    polling (300 s) or the reconcile (1800 s) would take minutes. Paused again, it is accepted
    so by `update {status: PAUSED}`, which asks Nova nothing (no event): compliance_ok as well."""
    _create_monitored(fast_agent, FAST, vm_name, facts)
    vm = nova.servers.find(name=vm_name).id
    try:
        asked = _change(nova, vm, "pause")
        _arrived, error = events.first(about(fast_agent.uuid, FAST, vm, "compliance_error"), 30, after=asked)
        assert error["reason"] == "the VM is PAUSED, desired ACTIVE" and error["remediation"] is None
        settle(nova, vm, "PAUSED")
        asked = time.monotonic()
        reply = fast_agent.call("update", FAST, name=vm, status="ACTIVE", wait=60)
        assert reply["status"]["vm_status"] == "ACTIVE" and reply["status"]["vm_actions"] == ["unpause"], reply
        _arrived, ok = events.first(about(fast_agent.uuid, FAST, vm, "compliance_ok"), 10, after=asked)
        assert ok["current_status"]["vm_status"] == "ACTIVE" and ok["status"]["vm_status"] == "ACTIVE"
        assert ok["compliant"] is True and ok["back_to_compliance"] is True

        asked = _change(nova, vm, "pause")
        events.first(about(fast_agent.uuid, FAST, vm, "compliance_error"), 30, after=asked)
        settle(nova, vm, "PAUSED")
        asked = time.monotonic()
        reply = fast_agent.call("update", FAST, name=vm, status="PAUSED")
        assert reply["status"]["vm_actions"] == [], reply
        _arrived, ok = events.first(about(fast_agent.uuid, FAST, vm, "compliance_ok"), 10, after=asked)
        assert ok["status"]["vm_status"] == "PAUSED" and ok["current_status"]["vm_status"] == "PAUSED"
    finally:
        fast_agent.call("delete", FAST, name=vm, wait=30)


def test_with_remediate_the_agent_starts_it_again(fast_agent, events, nova, facts, vm_name):
    _create_monitored(fast_agent, REMEDIATE, vm_name, facts)
    vm = nova.servers.find(name=vm_name).id
    try:
        asked = _change(nova, vm, "stop")
        _arrived, error = events.first(about(fast_agent.uuid, REMEDIATE, vm, "compliance_error"), 30, after=asked)
        assert error["remediation"] == {"update": {"status": "ACTIVE"}, "vm_actions": ["start"]}
        events.first(about(fast_agent.uuid, REMEDIATE, vm, "compliance_ok"), 30, after=asked)
        assert settle(nova, vm, "ACTIVE")[0] == "ACTIVE"
        # the other section saw the same VM change, but does not monitor it
        assert not events.matching(about(fast_agent.uuid, FAST, vm, "compliance_error"))
    finally:
        fast_agent.call("delete", REMEDIATE, name=vm, force=True, wait=30)


def test_an_update_s_own_pause_is_no_drift_and_an_outside_unpause_is(polled_agent, events, nova, facts, vm_name):
    """`update {status: PAUSED, monitor: true, wait}` of a monitored VM in a section that remediates:
    Nova's notifications of the pause arrive while the update still waits, when the recorded desired
    state is still ACTIVE. They are no drift: no compliance_error, and the VM is not un-paused, over
    a few notification and poll cycles. Un-paused outside the agent afterwards, it is a drift again,
    judged against the new desired state (PAUSED), and remediated."""
    _create_monitored(polled_agent, POLLED_REMEDIATE, vm_name, facts)
    vm = nova.servers.find(name=vm_name).id
    try:
        asked = time.monotonic()
        status = _monitored(polled_agent, "update", POLLED_REMEDIATE, name=vm, status="PAUSED", wait=60)
        assert status["vm_status"] == "PAUSED" and status["vm_actions"] == ["pause"] and status["vm_monitored"]
        paused, _event = events.first(about(polled_agent.uuid, POLLED_REMEDIATE, vm, vm_status="PAUSED",
                                            vm_task_state=None), 30, after=asked)
        events.listen(3 * POLL_SECONDS)
        assert settle(nova, vm)[0] == "PAUSED"
        assert not events.matching(about(polled_agent.uuid, POLLED_REMEDIATE, vm, "compliance_error"), after=asked)
        assert not events.matching(about(polled_agent.uuid, POLLED_REMEDIATE, vm, vm_status="ACTIVE"), after=paused)

        asked = _change(nova, vm, "unpause")
        _arrived, error = events.first(about(polled_agent.uuid, POLLED_REMEDIATE, vm, "compliance_error"), 30,
                                       after=asked)
        assert error["status"]["vm_status"] == "PAUSED" and error["reason"] == "the VM is ACTIVE, desired PAUSED"
        assert error["remediation"] == {"update": {"status": "PAUSED"}, "vm_actions": ["pause"]}
        events.first(about(polled_agent.uuid, POLLED_REMEDIATE, vm, "compliance_ok"), 30, after=asked)
        assert settle(nova, vm, "PAUSED")[0] == "PAUSED"
    finally:
        polled_agent.call("delete", POLLED_REMEDIATE, name=vm, force=True, wait=30)
