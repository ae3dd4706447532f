"""HA fault tests (issue 11): a group of 3 agent processes with one uuid on a quorum queue of the
local 3-node cluster (tools/rabbitcluster), single active consumer, the devcloud, and faults
injected mid-run.

Each run sends 1,000 requests (tests/support/ha_load.py says which, when the faults strike and
how the run is judged); the figures asserted are the issue's: 0 requests without an answer,
0 duplicate VMs, 0 unrequested resize confirmations; then /healthz and /metrics of the group
against the broker's view and the run (tests/support/ha_metrics.py). Each run prints its
figures (``-s`` shows them). Select these tests with ``-m ha``.
"""

import time
import uuid

import pika
import pytest

from cloudmanagers_plugin.agent.settings import load_settings, queue_arguments
from tests.support.cluster import Node
from tests.support.ha_agent import CRASH_VARIABLE
from tests.support.ha_group import AgentGroup, ctl, queue_leader, url
from tests.support.ha_load import Client, Fault, FaultRun, Mix, VmWatch, create_in_flight, delete_vms, message, \
    resize_in_flight, tally
from tests.support.ha_metrics import check_abandoned, check_metrics, scrape

pytestmark = [pytest.mark.e2e, pytest.mark.ha]

METRICS_PORTS = [28201, 28202, 28203]
DELIVERY_LIMIT = 3
GROUP = {"workers": 8, "queue_type": "quorum", "consumers": "single-active", "delivery_limit": DELIVERY_LIMIT}


@pytest.fixture
def nodes(cluster):
    """The nodes of the cluster (tests/conftest.py: every node up before and after each test)."""
    return cluster.nodes()


@pytest.fixture
def make_group(cluster, e2e_config, tmp_path):
    """``make_group(hosts, env=None, leader=None)``: 3 agents consuming; stopped and their queue
    deleted afterwards. ``leader``: the node to declare the queue from first, so that its leader
    is there and not on the node the agents connect to."""
    groups = []

    def make(hosts, env=None, leader=None):
        group = AgentGroup(str(tmp_path / f"agents{len(groups)}"), e2e_config, str(uuid.uuid4()),
                           [node.address for node in hosts], 3, METRICS_PORTS, GROUP, env)
        groups.append(group)
        if leader is not None:
            declare(leader, group)
        return group.start()

    yield make
    for group in groups:
        group.stop()
        cluster.delete_queue(group.uuid)


def declare(node, group):
    """Declare the group's queue from ``node`` with the arguments the agents declare it with."""
    arguments = queue_arguments(load_settings(group.agents[0].config))
    with pika.BlockingConnection(node.parameters()) as connection:
        connection.channel().queue_declare(group.uuid, durable=True, arguments=arguments)


@pytest.fixture
def prefix(nova):
    """The names of one run's VMs; every VM of the run is deleted afterwards, whatever happened."""
    name = f"ha-{uuid.uuid4().hex[:6]}"
    yield name
    delete_vms(nova, name)


def fault_run(group, client_node, faults, nova, admin_nova, facts, sections, prefix):
    """One run of the mix with ``faults``, its figures printed and asserted; returns the run."""
    mix = Mix(prefix, sections["v3"], facts["image_id"])
    watch = VmWatch(nova, prefix, mix.new_flavor).start()
    client = Client(url(client_node), group.uuid)
    run = FaultRun(client, mix, watch, faults, nova)
    try:
        run.run()
    finally:
        watch.stop()
        client.close()
    figures = tally(run, admin_nova, nova)
    print(f"\n[ha] {figures.summary()}")
    assert not figures.problems, (figures.summary() + "\n" + "\n".join(figures.problems[:40])
                                  + f"\nagent logs: {group.workdir}")
    return run


def wait_for(probe, timeout=60):
    """The first true value ``probe()`` returns, polled every 0.5 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"nothing after {timeout} s")


# -- 1. kill -9 of the working agent, twice -----------------------------------------------------------


def test_kill_the_working_agent_twice(make_group, nodes, nova, admin_nova, facts, sections, prefix):
    client_node = nodes[-1]
    group = make_group(nodes)
    before = {}

    def kill_active():
        agent, node = group.active(client_node)  # the one the broker delivers to
        pid = agent.pid
        before[pid] = scrape(agent)  # its counters die with it
        group.kill(agent)  # and it starts again, as a standby
        return f"killed agent {agent.slot} (pid {pid}, on {node})"

    faults = [Fault("kill -9 #1", create_in_flight, kill_active), Fault("kill -9 #2", resize_in_flight, kill_active)]
    run = fault_run(group, client_node, faults, nova, admin_nova, facts, sections, prefix)
    print(f"[ha] metrics: {check_metrics(group, client_node, run, before, redeliveries=2)}")


# -- 2. the queue leader's node stopped, then the agents' node killed ----------------------------------


def test_stop_the_leader_node_then_the_agents_node(cluster, make_group, nodes, nova, admin_nova, facts, sections,
                                                    prefix):
    leader_node, agents_node, client_node = nodes  # the requests and replies go through the third
    group = make_group([agents_node, leader_node, client_node], leader=leader_node)

    def stop_leader():
        leader = queue_leader(client_node, group.uuid)
        assert leader != client_node.name, "the requester's own node cannot be stopped"
        ctl(leader, "stop")  # a clean stop of the node
        new = wait_for(lambda: (lambda now: now if now != leader else None)(queue_leader(client_node, group.uuid)))
        _, serving = group.active(client_node)
        cluster.revive(Node(leader, 0, False))  # a majority again before the next fault
        return f"stopped {leader} (the leader's node); new leader {new}; agents on {serving}; {leader} revived"

    def kill_agents_node():
        _, node = group.active(client_node)
        assert node != client_node.name, "the requester's own node cannot be stopped"
        cluster.kill(Node(node, 0, True))  # kill -9 of the node
        _, serving = group.active(client_node)
        cluster.revive(Node(node, 0, False))
        return f"killed {node} (the agents' node); agents now on {serving}; {node} revived"

    faults = [Fault("stop the leader's node", create_in_flight, stop_leader),
              Fault("kill the agents' node", resize_in_flight, kill_agents_node)]
    run = fault_run(group, client_node, faults, nova, admin_nova, facts, sections, prefix)
    print(f"[ha] metrics: {check_metrics(group, client_node, run, {}, reconnects=3)}")


# -- 3. a request that kills every agent that takes it ---------------------------------------------


def test_a_request_that_kills_every_agent_is_abandoned(make_group, nodes, sections):
    poison = f"ha-poison-{uuid.uuid4().hex[:6]}"
    group = make_group(nodes, env={CRASH_VARIABLE: poison})
    group.supervise()  # systemd's Restart=: each agent the poison kills comes back
    client = Client(url(nodes[-1]), group.uuid)
    try:
        around = [client.send("read", None, message("read", "")).correlation_id for _ in range(100)]
        bad = client.send("poison", poison, message("update", sections["v3"], name=poison, status="ACTIVE"))
        around += [client.send("read", None, message("read", "")).correlation_id for _ in range(100)]
        wait_answered(client, 180)
        after = [client.send("read", None, message("read", sections["v3"])).correlation_id for _ in range(20)]
        wait_answered(client, 60)
    finally:
        client.close()
    replies = {correlation_id: [body for _at, body in client.replies[correlation_id]] for correlation_id in client.sent}
    collateral = [each for each in around if any("abandoned" in body.get("error", "") for body in replies[each])]
    print(f"\n[ha] poison: {len(replies[bad.correlation_id])} reply, {group.restarts} agents killed and restarted; "
          f"{len(around) - len(collateral)} of the {len(around)} requests sent around it served, {len(collateral)} "
          f"abandoned with it (delivered beside it at each crash); {len(after)} sent after it served")
    assert not client.unanswered()
    assert [f"abandoned after {DELIVERY_LIMIT} deliveries" in body.get("error", "")
            for body in replies[bad.correlation_id]] == [True]
    assert group.restarts == DELIVERY_LIMIT  # each delivery killed the agent that took it
    assert all("error" not in body or "abandoned" in body["error"] for each in around for body in replies[each])
    assert all("error" not in body for each in after for body in replies[each])
    check_abandoned(group, nodes[-1], 1 + len(collateral))


def wait_answered(client, timeout):
    deadline = time.monotonic() + timeout
    while client.unanswered() and time.monotonic() < deadline:
        client.pump(0.1)
