"""The agent's own ceiling: VM-details reads against a zero-latency OpenStack, vs raw requests.

The agent (8 workers, the real controller and OpenStack driver) answers reads of 8 VMs from an
HTTP fake answering in-process (requests-mock, no latency), with 16 requests in flight. The
raw figure: 8 threads sending the same Nova request (``GET /servers/detail?name=...``, the
one request a VM-details read makes) through one keystoneauth session against the same fake,
without AMQP, checks or controller. Both sides run the fake in their own process, so each
pays it alike. The target's raw session reads the environment once, as the driver's does
(``drivers/session.py``): a raw client could skip requests' per-request environment search
too, so the agent must not count that saving as its own. A plain keystoneauth session (which
searches the environment per request) is timed beside it for reference. Rounds alternate;
the median ratio is the figure. Target: the agent >= 0.8x raw.

Also timed in the same rounds, the floor of any agent in one process: a bare pika consumer whose
workers send nothing but that raw request, with the agent's prefetch, hand-over and confirmed
replies (``bench.round_trip_floor``), and no checks, controller or driver.

Also printed, as it depends less on other load on the machine: the CPU time each side spends
per read (the agent's process; the bench's process while only the raw threads run). The agent
also needs the broker and this client, on the same cores, which the throughput ratio includes
and this one does not.
"""

import json
import os
import statistics
import sys
import threading
import time
import uuid
from typing import Dict, List

import requests_mock

from bench.agent_harness import Client, Process, cpu_seconds
from bench.round_trip_floor import NOVA_READ, NOVA_READ_UNCONFIRMED, floor_process
from tests.support.fakecloud import NOVA, FakeCloud

ROUNDS, REQUESTS, WORKERS, IN_FLIGHT, TARGET = 7, 800, 8, 16, 0.8


def details_read(vm: str) -> bytes:
    """A VM-details read of the section the fake cloud serves."""
    return json.dumps({"collection": "cloudmanagers", "action": "read", "id": "test_os",
                       "attributes": {"name": vm}, "filters": {}}).encode()


def raw_rate(session, requests: int) -> float:
    """Reads per second, ``WORKERS`` threads each sending its share of the Nova requests."""
    def share(count: int, offset: int) -> None:
        for n in range(count):
            session.get(f"{NOVA}/servers/detail", params={"name": f"^vm-{(n + offset) % 8}$"})

    threads = [threading.Thread(target=share, args=(requests // WORKERS, t)) for t in range(WORKERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return requests / (time.perf_counter() - started)


def main() -> int:
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    from cloudmanagers_plugin.drivers.session import DriverSession

    client = Client()
    bodies = [details_read(f"vm-{n % 8}") for n in range(REQUESTS)]
    agent_rates, raw_rates, plain_rates, agent_cpu, raw_cpu = [], [], [], [], []
    floor_rates: Dict[str, List[float]] = {NOVA_READ: [], NOVA_READ_UNCONFIRMED: []}
    with requests_mock.Mocker(real_http=True) as mocker, \
            Process("cloud", f"bench-agent-{uuid.uuid4().hex[:8]}", str(WORKERS)) as agent, \
            floor_process(NOVA_READ) as floor, floor_process(NOVA_READ_UNCONFIRMED) as unconfirmed:
        floors = {NOVA_READ: floor.queue, NOVA_READ_UNCONFIRMED: unconfirmed.queue}
        cloud = FakeCloud(mocker)
        for n in range(8):
            cloud.add_server(f"vm-{n}")
        auth = v3.Password(auth_url="http://127.0.0.1:5000/v3", username="demo", password=cloud.password,
                           project_name="demo", user_domain_id="default", project_domain_id="default")
        session, plain = DriverSession(auth=auth), ks_session.Session(auth=auth)
        client.run(agent.queue, bodies[:100], IN_FLIGHT)  # warm-up: token, microversion
        for queue in floors.values():
            client.run(queue, bodies[:100], IN_FLIGHT)
        raw_rate(session, 80)
        raw_rate(plain, 80)
        for _ in range(ROUNDS):
            started = cpu_seconds(agent.pid)
            agent_rates.append(REQUESTS / client.run(agent.queue, bodies, IN_FLIGHT))
            agent_cpu.append((cpu_seconds(agent.pid) - started) / REQUESTS)
            started = cpu_seconds(os.getpid())
            raw_rates.append(raw_rate(session, REQUESTS))
            raw_cpu.append((cpu_seconds(os.getpid()) - started) / REQUESTS)
            plain_rates.append(raw_rate(plain, REQUESTS))
            for mode, queue in floors.items():
                floor_rates[mode].append(REQUESTS / client.run(queue, bodies, IN_FLIGHT))
    client.close()
    ratio = statistics.median(a / r for a, r in zip(agent_rates, raw_rates))
    plain_ratio = statistics.median(a / r for a, r in zip(agent_rates, plain_rates))
    agent_ms, raw_ms = statistics.median(agent_cpu) * 1000, statistics.median(raw_cpu) * 1000
    print(f"zero-latency OpenStack, {WORKERS} workers: agent {statistics.median(agent_rates):.0f} reads/s "
          f"({IN_FLIGHT} in flight), raw threaded Nova requests {statistics.median(raw_rates):.0f}/s "
          f"(a plain keystoneauth session: {statistics.median(plain_rates):.0f}/s, ratio {plain_ratio:.2f}x); "
          f"ratio {ratio:.2f}x (target >= {TARGET}x, median of {ROUNDS} rounds): {'OK' if ratio >= TARGET else 'UNDER'}")
    floor_ratio, unconfirmed_ratio = (statistics.median(f / r for f, r in zip(floor_rates[mode], raw_rates))
                                      for mode in (NOVA_READ, NOVA_READ_UNCONFIRMED))
    print(f"floor: a bare pika consumer whose {WORKERS} workers only send that raw request, replies confirmed "
          f"before the ack (bench.round_trip_floor {NOVA_READ}): {statistics.median(floor_rates[NOVA_READ]):.0f}/s, "
          f"{floor_ratio:.2f}x raw ({unconfirmed_ratio:.2f}x without confirms); the agent {ratio / floor_ratio:.2f}x "
          "that floor")
    print(f"CPU per read: agent process {agent_ms:.3f} ms, raw {raw_ms:.3f} ms (raw/agent {raw_ms / agent_ms:.2f}x)")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
