"""Parallel requests against the legacy one-at-a-time design, with a 200 ms OpenStack call.

The same agent and controller run twice: with ``workers = 1`` (prefetch 1, one request at a
time: the legacy agent's design) and with ``workers = 8``. Each run gets 32 requests about 32
different VMs at once, through an in-process driver that takes 200 ms per VM lookup.
Target: the 8-worker agent has at least 6x the serial throughput.
"""

import sys
import uuid

from bench.agent_harness import Client, Process, read_request

REQUESTS, LATENCY = 32, 0.2


def throughput(client: Client, workers: int) -> float:
    with Process("agent", f"bench-agent-{uuid.uuid4().hex[:8]}", str(workers), str(LATENCY)) as agent:
        bodies = [read_request(f"vm-{n}") for n in range(REQUESTS)]
        return REQUESTS / client.run(agent.queue, bodies, REQUESTS)


def main() -> int:
    client = Client()
    serial, parallel = throughput(client, 1), throughput(client, 8)
    client.close()
    ratio = parallel / serial
    print(f"{REQUESTS} requests, {LATENCY * 1000:.0f} ms driver latency: serial (workers=1) {serial:.2f}/s, "
          f"workers=8 {parallel:.2f}/s, ratio {ratio:.2f}x (target >= 6x): {'OK' if ratio >= 6 else 'UNDER'}")
    return 0 if ratio >= 6 else 1


if __name__ == "__main__":
    sys.exit(main())
