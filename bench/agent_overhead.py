"""Agent overhead against a bare pika RPC echo server, same broker, same request body.

Both serve the same queue-addressed request: the agent runs it through its checks, the real
cloudmanagers controller and an in-process driver with zero latency, publishes the reply with
publisher confirms and acks after the confirm; the echo server just sends the body back.
The machine is shared and its load drifts, so short rounds alternate between the two and
each round gives a ratio; the median ratio is the figure. Measured: the round trip one
request at a time, and the throughput with 8 requests in flight. Targets: both <= 1.5x, and
the round trip <= 1.2x (the agent ceiling issue).
"""

import statistics
import sys
import uuid

from bench.agent_harness import Client, Process, read_request

ROUNDS, SERIAL, PIPELINED, WINDOW = 15, 200, 600, 8
TARGET, ROUND_TRIP_TARGET = 1.5, 1.2


def main() -> int:
    client = Client()
    bodies = [read_request(f"vm-{n % 50}") for n in range(PIPELINED)]
    latency = {"echo": [], "agent": []}
    rate = {"echo": [], "agent": []}
    with Process("echo", f"bench-echo-{uuid.uuid4().hex[:8]}") as echo, \
            Process("agent", f"bench-agent-{uuid.uuid4().hex[:8]}", "8", "0") as agent:
        queues = {"echo": echo.queue, "agent": agent.queue}
        for queue in queues.values():
            client.run(queue, bodies[:300], 1)  # warm-up
        for _ in range(ROUNDS):
            for name, queue in queues.items():
                latency[name].append(client.run(queue, bodies[:SERIAL], 1) / SERIAL)
                rate[name].append(PIPELINED / client.run(queue, bodies, WINDOW))
    client.close()
    serial = statistics.median(a / e for a, e in zip(latency["agent"], latency["echo"]))
    pipelined = statistics.median(e / a for a, e in zip(rate["agent"], rate["echo"]))
    print(f"round trip, one at a time: echo {statistics.median(latency['echo']) * 1000:.2f} ms, "
          f"agent {statistics.median(latency['agent']) * 1000:.2f} ms; ratio {serial:.2f}x "
          f"(median of {ROUNDS} rounds of {SERIAL})")
    print(f"throughput, {WINDOW} in flight: echo {statistics.median(rate['echo']):.0f}/s, "
          f"agent {statistics.median(rate['agent']):.0f}/s; ratio {pipelined:.2f}x "
          f"(median of {ROUNDS} rounds of {PIPELINED})")
    worst = max(serial, pipelined)
    print(f"agent overhead {worst:.2f}x (target <= {TARGET}x): {'OK' if worst <= TARGET else 'OVER'}")
    print(f"agent round trip {serial:.2f}x (target <= {ROUND_TRIP_TARGET}x): "
          f"{'OK' if serial <= ROUND_TRIP_TARGET else 'OVER'}")
    return 0 if worst <= TARGET and serial <= ROUND_TRIP_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
