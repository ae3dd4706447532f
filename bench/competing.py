"""Competing consumers: 3 agents of one group vs 1 agent, against a 200 ms OpenStack.

Each agent is the real agent, controller and OpenStack driver (8 workers) against one HTTP
fake OpenStack (bench/http_cloud.py, a process of its own on port 26201) whose Nova VM look-up
answers after 200 ms. The agents consume one quorum queue on the 3-node cluster of
tools/rabbitcluster with ``consumers = competing``; the client keeps 48 reads of different VMs
in flight (the prefetch of 3 agents). The same run measures 1 agent, then 3.
Target: 3 agents >= 2.7x one agent.
"""

import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid

from bench.agent_harness import Client, Process
from tests.support import ROOT
from tests.support.cluster import Cluster

REQUESTS, LATENCY, WORKERS, IN_FLIGHT, TARGET, PORT = 480, 0.2, 8, 48, 2.7, 26201


def details_read(vm: str) -> bytes:
    return json.dumps({"collection": "cloudmanagers", "action": "read", "id": "test_os",
                       "attributes": {"name": vm}, "filters": {}}).encode()


def throughput(cluster: Cluster, agents: int) -> float:
    """Reads per second of a group of ``agents``."""
    queue = f"bench-competing-{uuid.uuid4().hex[:8]}"
    node = cluster.nodes()[0].parameters()
    client = Client(node)
    bodies = [details_read(f"vm-{n % 64}") for n in range(REQUESTS)]
    with contextlib.ExitStack() as stack:
        for count in range(1, agents + 1):
            stack.enter_context(Process("http", queue, str(WORKERS), str(PORT), cluster.hosts, "quorum",
                                        "competing", broker=node, consumers=count))
        client.run(queue, bodies[:IN_FLIGHT], IN_FLIGHT)  # warm-up: each agent's token and microversion
        rate = REQUESTS / client.run(queue, bodies, IN_FLIGHT)
    client.close()
    return rate


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"the HTTP fake OpenStack does not listen on {port}")


def main() -> int:
    cluster = Cluster()
    if not cluster.all_up():
        raise SystemExit("the cluster is not running: tools/rabbitcluster start")
    cloud = subprocess.Popen([sys.executable, "-m", "bench.http_cloud", str(PORT), str(LATENCY)], cwd=ROOT)
    try:
        wait_listening(PORT)
        one, three = throughput(cluster, 1), throughput(cluster, 3)
    finally:
        cloud.terminate()
        cloud.wait(10)
    ratio = three / one
    print(f"{REQUESTS} reads, {LATENCY * 1000:.0f} ms OpenStack, {WORKERS} workers per agent, quorum queue, competing: "
          f"1 agent {one:.1f}/s, 3 agents {three:.1f}/s, ratio {ratio:.2f}x (target >= {TARGET}x): "
          f"{'OK' if ratio >= TARGET else 'UNDER'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
