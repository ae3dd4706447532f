"""Change events through the real RabbitMQ (issue 10): the agent's feed against the faked Nova,
with its connection killed mid-stream and the agent restarted: every transition exactly once."""

import threading
import time

import pytest
import requests_mock

from cloudmanagers_plugin import CloudmanagersController
from tests.support.agent import EventListener, close_connection_named, temporary_exchange, wait_for_consumer
from tests.support.controller import LEGACY_SECTION, write_config
from tests.support.fakecloud import FakeCloud

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def cloud():
    with requests_mock.Mocker(real_http=False) as mocker:
        yield FakeCloud(mocker)


@pytest.fixture
def events_exchange(broker):
    with temporary_exchange("agent-test-events") as name:
        yield name


@pytest.fixture
def listener(events_exchange):
    listening = EventListener(events_exchange)
    yield listening
    listening.close()


@pytest.fixture
def start_events_agent(start_agent, events_exchange, tmp_path):
    config = write_config(tmp_path / "cloudmanagers.conf", LEGACY_SECTION)

    def start():
        """An agent whose first full list of the section is done (what exists then is no event)."""
        controller = CloudmanagersController(config_path=config, agent_uuid="events-agent")
        agent = start_agent(controller, events_exchange=events_exchange, poll_interval=0.1,
                            state_dir=str(tmp_path / "state"))
        deadline = time.monotonic() + 10
        while not agent.service.feed.sections or agent.service.feed.reconciles("test_os") < 1:
            assert time.monotonic() < deadline, "no first reconcile"
            time.sleep(0.02)
        return agent

    return start


def step(server, minute, status):
    server.update(status=status, updated=f"2026-11-25T11:{minute:02d}:00Z")


def test_events_reach_the_exchange_with_the_details_keys(cloud, start_events_agent, listener):
    server = cloud.add_server("web")
    agent = start_events_agent()
    step(server, 1, "SHUTOFF")
    body, = listener.wait(lambda bodies: bodies)
    assert (body["uuid"], body["collection"], body["resource_id"], body["msg_type"]) == \
        (agent.settings.uuid, "cloudmanagers", "test_os", "status")
    status = body["status"]
    assert (status["vm_name"], status["vm_id"], status["vm_status"], status["vm_event"], status["sequence"]) == \
        ("web", server["id"], "SHUTOFF", "changed", 1)
    assert {"vm_task_state", "vm_flavor", "vm_flavor_name", "vm_addresses", "vm_updated"} <= set(status)
    properties = listener.messages[0][0]
    assert properties.correlation_id is None and properties.message_id == "test_os/1"


def test_connection_kills_lose_no_event_and_repeat_none(cloud, start_events_agent, listener):
    servers = [cloud.add_server(f"vm{index}") for index in range(5)]
    agent = start_events_agent()
    statuses = ["SHUTOFF", "ACTIVE", "PAUSED", "ACTIVE"]
    for minute, status in enumerate(statuses, start=1):
        for server in servers:
            step(server, minute, status)
        wait_for_consumer(agent.settings.uuid)
        time.sleep(0.15)  # the next poll takes them, their events are in flight...
        assert close_connection_named(f"cloudmanagers-agent {agent.settings.uuid}") == 1  # ...and the broker goes
    bodies = listener.wait(lambda bodies: len(bodies) >= 20, timeout=30)
    time.sleep(1.0)
    listener.connection.process_data_events(time_limit=0.2)
    sequences = sorted(body["status"]["sequence"] for body in listener.bodies())
    assert sequences == list(range(1, 21))  # each of the 20 transitions once: none lost, none twice
    assert {(b["status"]["vm_name"], b["status"]["vm_status"]) for b in bodies} == \
        {(f"vm{index}", status) for index in range(5) for status in ("SHUTOFF", "ACTIVE", "PAUSED")}


def test_restart_loses_no_transition_and_repeats_none(cloud, start_events_agent, listener):
    web, db = cloud.add_server("web"), cloud.add_server("db")
    first = start_events_agent()
    step(web, 1, "PAUSED")
    listener.wait(lambda bodies: len(bodies) == 1)
    first.stop()
    step(web, 2, "ACTIVE")  # while no agent runs
    step(db, 2, "SHUTOFF")
    del cloud.servers[db["id"]]  # ...and db deleted, its record pruned
    cloud.add_server("new")
    start_events_agent()
    listener.wait(lambda bodies: len(bodies) >= 4)
    time.sleep(1.0)
    listener.connection.process_data_events(time_limit=0.2)
    assert [(b["status"]["vm_name"], b["status"]["vm_event"], b["status"]["vm_status"], b["status"]["sequence"])
            for b in listener.bodies()] == [("web", "changed", "PAUSED", 1), ("web", "changed", "ACTIVE", 2),
                                            ("new", "created", "ACTIVE", 3), ("db", "deleted", "DELETED", 4)]


def test_events_unconfirmed_when_the_connection_drops_are_sent_again(cloud, start_events_agent, listener,
                                                                     monkeypatch, tmp_path):
    """The broker routed the events but its confirms never came (the connection died first): the
    agent cannot know they arrived, so it sends them again after reconnecting, with the same
    sequence (a controller drops the repeat by it); the saved state moves only then."""
    from cloudmanagers_plugin.agent.publisher import ReplyPublisher
    from cloudmanagers_plugin.changes import TrackerStore

    dropping, dropped = threading.Event(), []
    confirm = ReplyPublisher._on_confirm

    def lose_or_confirm(publisher, frame):
        if dropping.is_set():
            dropped.append(frame.method.delivery_tag)
        else:
            confirm(publisher, frame)

    monkeypatch.setattr(ReplyPublisher, "_on_confirm", lose_or_confirm)
    servers = [cloud.add_server(f"vm{index}") for index in range(3)]
    agent = start_events_agent()
    dropping.set()  # the broker's confirms are lost from now on
    for server in servers:
        step(server, 1, "SHUTOFF")
    listener.wait(lambda bodies: len(bodies) == 3)
    deadline = time.monotonic() + 10
    while max(dropped, default=0) < 3:  # the broker's confirms of the three came, and were lost
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert TrackerStore(str(tmp_path / "state")).load("test_os")["sequence"] == 0
    dropping.clear()
    assert close_connection_named(f"cloudmanagers-agent {agent.settings.uuid}") == 1
    bodies = listener.wait(lambda bodies: len(bodies) == 6)
    assert sorted(body["status"]["sequence"] for body in bodies) == [1, 1, 2, 2, 3, 3]
    assert bodies[3:] == bodies[:3]
    deadline = time.monotonic() + 10
    while TrackerStore(str(tmp_path / "state")).load("test_os")["sequence"] != 3:
        assert time.monotonic() < deadline, "the confirmed state did not move after the republish"
        time.sleep(0.05)
