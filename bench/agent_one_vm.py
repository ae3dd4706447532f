"""VM-details reads of ONE VM against reads of 8 different VMs: 8 workers, a 100 ms backend.

One agent (8 workers) and an in-process driver whose VM lookup takes 100 ms. The client keeps
8 requests in flight and sends, in alternating rounds: reads of 8 different VMs (the
reference), reads of one VM that differ (an extra attribute, so each needs its own OpenStack
request: reads side by side on one VM), and identical reads of one VM (they also share
requests in flight). Each round gives a ratio against the reference taken just before it;
the median ratio is the figure. Target: reads of one VM >= 0.9x the rate of 8 different VMs.
"""

import json
import statistics
import sys
import uuid
from typing import Dict, List

from bench.agent_harness import Client, Process, read_request

ROUNDS, REQUESTS, WINDOW, LATENCY, TARGET = 5, 64, 8, 0.1, 0.9


def distinct_read(vm: str, n: int) -> bytes:
    """A read of ``vm`` that no other read equals (the controller ignores the extra attribute)."""
    return json.dumps({"collection": "cloudmanagers", "action": "read", "id": "cm_bench",
                       "attributes": {"name": vm, "bench_probe": n}, "filters": {}}).encode()


def main() -> int:
    client = Client()
    loads: Dict[str, List[bytes]] = {
        "8 different VMs": [read_request(f"vm-{n % 8}") for n in range(REQUESTS)],
        "one VM, reads that differ": [distinct_read("vm-0", n) for n in range(REQUESTS)],
        "one VM, identical reads": [read_request("vm-0") for _ in range(REQUESTS)],
    }
    rates: Dict[str, List[float]] = {name: [] for name in loads}
    with Process("agent", f"bench-agent-{uuid.uuid4().hex[:8]}", str(WINDOW), str(LATENCY)) as agent:
        client.run(agent.queue, loads["8 different VMs"][:16], WINDOW)  # warm-up
        for _ in range(ROUNDS):
            for name, bodies in loads.items():
                rates[name].append(REQUESTS / client.run(agent.queue, bodies, WINDOW))
    client.close()
    reference = rates["8 different VMs"]
    met = True
    print(f"{WINDOW} workers, {WINDOW} in flight, {LATENCY * 1000:.0f} ms backend, median of {ROUNDS} rounds "
          f"of {REQUESTS} reads:")
    for name, values in rates.items():
        ratio = statistics.median(value / ref for value, ref in zip(values, reference))
        verdict = "" if name == "8 different VMs" else f", {ratio:.2f}x (target >= {TARGET}x): " + (
            "OK" if ratio >= TARGET else "UNDER")
        met = met and (name == "8 different VMs" or ratio >= TARGET)
        print(f"  {name}: {statistics.median(values):.1f}/s{verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
