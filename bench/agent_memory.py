"""Agent memory across 10,000 requests: the resident set must stay flat.

Everything the agent keeps per request is bounded (the answer cache holds the last
``reply_cache_size`` answers), so after the warm-up the RSS should not grow. Prints the
agent process's RSS before the first request, after the warm-up, half-way and at the end.
"""

import sys
import uuid

from bench.agent_harness import Client, Process, read_request, rss_kib

TOTAL, WINDOW, WARMUP = 10_000, 16, 1_500
GROWTH_LIMIT_KIB = 2048  # middle -> end; a leak of ~200 bytes per request would exceed it


def main() -> int:
    client = Client()
    bodies = [read_request(f"vm-{n % 200}") for n in range(TOTAL)]
    with Process("agent", f"bench-agent-{uuid.uuid4().hex[:8]}", "8", "0") as agent:
        samples = {"start": rss_kib(agent.pid)}
        client.run(agent.queue, bodies[:WARMUP], WINDOW)
        samples["after warm-up"] = rss_kib(agent.pid)
        client.run(agent.queue, bodies[WARMUP:TOTAL // 2], WINDOW)
        samples["middle"] = rss_kib(agent.pid)
        client.run(agent.queue, bodies[TOTAL // 2:], WINDOW)
        samples["end"] = rss_kib(agent.pid)
    client.close()
    print(f"agent RSS over {TOTAL} requests: " + ", ".join(f"{name} {kib / 1024:.1f} MiB" for name, kib in samples.items()))
    growth = samples["end"] - samples["middle"]
    verdict = "OK" if growth <= GROWTH_LIMIT_KIB else "GROWING"
    print(f"middle -> end: {growth:+d} KiB (limit {GROWTH_LIMIT_KIB} KiB): {verdict}")
    return 0 if growth <= GROWTH_LIMIT_KIB else 1


if __name__ == "__main__":
    sys.exit(main())
