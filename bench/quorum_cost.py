"""The cost of a quorum queue: one request's round trip through a quorum queue vs a classic one.

One agent (the fake controller, no OpenStack, zero latency) on the 3-node cluster of
tools/rabbitcluster, with ``queue_type = classic`` then ``quorum``, in alternating rounds; each
round sends requests one at a time (the next once the previous is answered) from a client on
the node the agent is connected to, so the figure is the queue's own cost: a quorum queue
replicates each request to a majority of the nodes (and fsyncs it) before delivering it.
"""

import statistics
import sys
import time
import uuid

from tests.support.agent import Requester, request
from tests.support.cluster import AgentProcess, Cluster

ROUNDS, REQUESTS = 3, 200


def round_trip(cluster: Cluster, requester: Requester, queue_type: str) -> float:
    """Median seconds per request of one round on a fresh queue of ``queue_type``."""
    queue = str(uuid.uuid4())
    agent = AgentProcess(queue, cluster.hosts, "--queue-type", queue_type, "--consumers", "competing")
    try:
        agent.wait_for("consuming from queue")
        times = []
        for n in range(REQUESTS):
            sent = time.perf_counter()
            correlation_id = requester.send(request("read", name="vm", n=n), queue)
            while not any(props.correlation_id == correlation_id for _m, props, _b in requester.received):
                requester.connection.process_data_events(time_limit=0.001)
            times.append(time.perf_counter() - sent)
            requester.received.clear()
        return statistics.median(times)
    finally:
        agent.stop()
        cluster.delete_queue(queue)


def main() -> int:
    cluster = Cluster()
    if not cluster.all_up():
        raise SystemExit("the cluster is not running: tools/rabbitcluster start")
    requester = Requester(cluster.nodes()[0].parameters())
    classic, quorum = [], []
    for _ in range(ROUNDS):
        classic.append(round_trip(cluster, requester, "classic"))
        quorum.append(round_trip(cluster, requester, "quorum"))
    requester.close()
    ratio = statistics.median(q / c for q, c in zip(quorum, classic))
    print(f"round trip, one request at a time, 3-node cluster: classic {statistics.median(classic) * 1000:.2f} ms, "
          f"quorum {statistics.median(quorum) * 1000:.2f} ms; quorum/classic {ratio:.2f}x "
          f"(median of {ROUNDS} alternating rounds of {REQUESTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
