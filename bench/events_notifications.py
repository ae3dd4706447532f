"""Change to event through Nova's notifications, against the devcloud (DEVCLOUD_* as for the tests).

An agent watches one section that names the devcloud's bus (``notifications_url``) and polls
only every 300 s, so an event within seconds can only come from a notification. VMS servers
are booted with novaclient, then stopped and started again directly with novaclient (as
someone in Horizon would), one change every SPACING seconds. For each change: the time from
the novaclient call to the event with the new status (no task under way) at the controller's
queue, split at the moment Nova's own ``instance.power_off.end`` / ``power_on.end``
notification reached a queue of the bench's on the same bus (Nova's part, then the agent's:
read, compare, publish); and how many such events came (exactly 1: 0 is a miss, 2 a
duplicate). Target: p50 and p95 < 1 s, 1 event per transition. On a loaded machine Nova's part
grows first: run it with little else going on.

    python -m bench.events_notifications [--vms 50] [--spacing 0.25]
"""

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from typing import Dict, List, Tuple

import pika
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from novaclient import client as nova_client

from tests.support.agent import EventListener, about
from tests.support.e2e import NovaTap, settle
from tools import harness

SECTION = "bench_notified"
TARGET_SECONDS = 1.0


def percentile(values: List[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def figures(values: List[float]) -> str:
    return f"p50 {statistics.median(values):.3f} s, p95 {percentile(values, 0.95):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between two changes")
    args = parser.parse_args()
    harness.devcloud("start", quiet=True)
    facts = harness.devcloud_facts()
    demo = facts["credentials"]["demo"]
    nova, admin = (nova_client.Client("2.47", session=ks_session.Session(
        auth=v3.Password(auth_url=facts["auth_url"], **facts["credentials"][who]))) for who in ("demo", "admin"))
    project = facts["demo_project_id"]
    quota = admin.quotas.get(project).instances  # the demo quota (20) is below the bench's VMs: lifted meanwhile
    admin.quotas.update(project, instances=-1)
    exchange = f"bench-events-{uuid.uuid4().hex[:8]}"
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_declare(exchange, "topic", auto_delete=False)
    workdir = tempfile.mkdtemp(prefix="bench-notifications-")
    config = f"{workdir}/cloudmanagers.conf"
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(f"[{SECTION}]\ncm_type = openstack\nkeystone_base_url = {facts['auth_url']}\n"
                     f"project_name = {demo['project_name']}\nusername = {demo['username']}\n"
                     f"password = {demo['password']}\nnotifications_url = {facts['notifications']['url']}\n")
    events = EventListener(exchange, "#")
    tap = NovaTap(facts["notifications"]["url"], facts["notifications"]["exchange"])
    agent = harness.Agent(workdir, config, events={"exchange": exchange, "poll_interval": 300}).start()
    servers: List[str] = []
    try:
        for index in range(args.vms):
            servers.append(nova.servers.create(f"bench-n-{index}-{uuid.uuid4().hex[:6]}", facts["image_id"],
                                               facts["flavor_ids"]["m1.tiny"], nics="none").id)
        for server_id in servers:
            settle(nova, server_id, "ACTIVE", timeout=300)
        events.listen(2)  # the creation events go by
        results: Dict[str, Tuple[List[float], List[float], List[float], int, int]] = {}
        for action, status, ended in (("stop", "SHUTOFF", "power_off"), ("start", "ACTIVE", "power_on")):
            asked = {}
            for server_id in servers:
                asked[server_id] = time.monotonic()
                getattr(nova.servers, action)(server_id)
                events.listen(args.spacing)  # each event timed as it arrives
            events.listen(5)  # the last changes, and late duplicates
            totals, nova_part, agent_part, misses, duplicates = [], [], [], 0, 0
            for server_id in servers:
                found = events.matching(about(agent.uuid, SECTION, server_id, vm_status=status, vm_task_state=None),
                                        after=asked[server_id])
                misses += not found
                duplicates += max(0, len(found) - 1)
                if not found:
                    continue
                arrived, _ = events.first(about(agent.uuid, SECTION, server_id, vm_status=status, vm_task_state=None),
                                          0, after=asked[server_id])
                totals.append(arrived - asked[server_id])
                done = tap.ended(server_id, ended, after=asked[server_id])
                if done is not None:
                    nova_part.append(done - asked[server_id])
                    agent_part.append(arrived - done)
            results[action] = (totals, nova_part, agent_part, misses, duplicates)
            for server_id in servers:
                settle(nova, server_id, status, timeout=120)
    finally:
        agent.stop()
        events.close()
        tap.close()
        for server_id in servers:
            nova.servers.delete(server_id)
        admin.quotas.update(project, instances=quota, force=True)
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", agent.uuid], capture_output=True)
        with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
            connection.channel().exchange_delete(exchange)
    print(f"{args.vms} VMs, one change every {args.spacing:g} s, through Nova's notifications (polling every 300 s)")
    for action, (totals, nova_part, agent_part, misses, duplicates) in results.items():
        print(f"  {action:5}: change -> event {figures(totals)}, max {max(totals):.3f} s; of which Nova (call -> its "
              f".end notification) {figures(nova_part)}, the agent (notification -> event) {figures(agent_part)}; "
              f"events {len(totals)}/{args.vms}, misses {misses}, duplicates {duplicates}")
    everything = [value for totals, *_ in results.values() for value in totals]
    agent_only = [value for _t, _n, agent_part, *_ in results.values() for value in agent_part]
    met = percentile(everything, 0.95) < TARGET_SECONDS and all(not r[3] and not r[4] for r in results.values())
    print(f"change -> event: {figures(everything)} (the agent's part {figures(agent_only)}); target < "
          f"{TARGET_SECONDS:g} s and exactly 1 event per transition: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
