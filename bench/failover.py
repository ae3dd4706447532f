"""Failover of an agent group: from the active agent's death to the next answer, by a standby.

Two agents (the fake controller, no OpenStack) share one quorum queue on the 3-node cluster of
tools/rabbitcluster with ``consumers = single-active``. Each round asks which agent is active,
then kills it and at once sends the next request, timing until its answer arrives (from the
standby); a fresh agent then joins as the new standby.

- ``kill -9``: the kernel closes the agent's socket, the broker sees it at once and hands the
  queue (and the unacked request) to the standby. Target: median < 1 s.
- ``SIGSTOP`` (a frozen agent, its socket open): only the missed heartbeats tell the broker,
  which checks once per heartbeat interval (``[rabbitmq] heartbeat``, 5 s here; 30 s by default)
  and closes the connection after two silent checks: two to three intervals, whatever the
  agents do.
"""

import json
import signal
import statistics
import sys
import time
import uuid
from typing import List

from tests.support.agent import Requester, request
from tests.support.cluster import AgentProcess, Cluster

KILL_ROUNDS, STOP_ROUNDS, HEARTBEAT, TARGET = 7, 3, 5, 1.0


def answered_by(requester: Requester, queue: str, timeout: float) -> int:
    """Send one request; the pid of the agent that answered it (SystemExit without an answer)."""
    correlation_id = requester.send(request("read", name="vm", whoami=True), queue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _method, properties, body in requester.received:
            if properties.correlation_id == correlation_id:
                requester.received.clear()
                return json.loads(body)["status"]["pid"]
        requester.connection.process_data_events(time_limit=0.002)
    raise SystemExit(f"no answer within {timeout} s")


def failovers(cluster: Cluster, signal_name: str, rounds: int) -> List[float]:
    """Seconds from the signal to the active agent until the standby's answer, per round."""
    sig = getattr(signal, signal_name)
    queue = str(uuid.uuid4())
    options = ("--queue-type", "quorum", "--heartbeat", str(HEARTBEAT))
    agents = [AgentProcess(queue, cluster.hosts, *options)]
    agents[0].wait_for("consuming from queue")
    requester = Requester(cluster.nodes()[0].parameters())
    times = []
    try:
        for _ in range(rounds):
            standby = AgentProcess(queue, cluster.hosts, *options)
            standby.wait_for("consuming from queue")
            agents.append(standby)
            active_pid = answered_by(requester, queue, 10)
            [active] = [agent for agent in agents if agent.pid == active_pid]
            active.kill(sig)
            signalled = time.monotonic()
            new_pid = answered_by(requester, queue, 6 * HEARTBEAT)
            times.append(time.monotonic() - signalled)
            assert new_pid == standby.pid, "the answer came from another agent than the standby"
            active.stop()
            agents.remove(active)
    finally:
        requester.close()
        for agent in agents:
            agent.stop()
        cluster.delete_queue(queue)
    return times


def main() -> int:
    cluster = Cluster()
    if not cluster.all_up():
        raise SystemExit("the cluster is not running: tools/rabbitcluster start")
    killed = failovers(cluster, "SIGKILL", KILL_ROUNDS)
    frozen = failovers(cluster, "SIGSTOP", STOP_ROUNDS)
    median = statistics.median(killed)
    print(f"kill -9 of the active agent -> the standby's answer: median {median * 1000:.0f} ms "
          f"(min {min(killed) * 1000:.0f}, max {max(killed) * 1000:.0f}, {KILL_ROUNDS} rounds; target < "
          f"{TARGET * 1000:.0f} ms): {'OK' if median < TARGET else 'OVER'}")
    print(f"SIGSTOP of the active agent -> the standby's answer: median {statistics.median(frozen):.1f} s "
          f"(min {min(frozen):.1f}, max {max(frozen):.1f}, {STOP_ROUNDS} rounds), bounded by 2-3 heartbeat "
          f"intervals of {HEARTBEAT} s")
    return 0 if median < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
