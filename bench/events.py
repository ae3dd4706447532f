"""Change events (issue 10): how soon, how cheap, how exact.

    python -m bench.events [--vms 50] [--interval 10] [--idle 60] [--skip-devcloud]

Against a devcloud (``DEVCLOUD_BASE``, default the shared one; run it under ``flock /tmp/e2e.lock``;
the demo project's instance quota is raised for the run and put back),
a standalone agent (``cloudmanagers agent`` as a process) watches one section whose Nova requests go
through a counting proxy in this process; ``--vms`` VMs are created and then changed directly with
novaclient (outside the agent), in rounds (pause, unpause, stop, start), spread over one polling
interval. Printed:

- change -> event latency, p50 and p95, from the novaclient call (which includes Nova's own work)
  and from the VM's ``updated`` time (Nova's record, 1 s resolution) to the event's arrival;
- events per real transition: one event per VM and round at rest (no task under way) is the
  target; duplicates (an event whose state equals that VM's previous event) and misses counted;
- Nova requests per idle polling interval, with 10 VMs on the devcloud and with 500 VMs on the
  HTTP fake of OpenStack (tests/support/httpcloud.py: the devcloud's quota and 2 cores do not
  hold 500 VMs), and the agent's CPU time and RSS over ``--idle`` seconds idle with those 500.

Other sources of events plug in through ``SOURCES``: a name, and the extra keys their section
needs, from the devcloud's facts (its notification bus, for instance); the latency rounds run
once per source.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

import pika

from bench.agent_harness import cpu_seconds, rss_kib
from cloudmanagers_plugin.changes import fingerprint
from tests.support.agent import EventListener
from tests.support.httpcloud import HTTPCloud
from tests.support.proxy import Proxy
from tools import harness

SECTION = "cm_events"
# source name -> the extra keys of its section, from the devcloud's facts; latency rounds run once per source
SOURCES: Dict[str, Callable[[Dict[str, Any]], Dict[str, str]]] = {"polling": lambda facts: {}}
ROUNDS: List[Tuple[str, str]] = [("pause", "PAUSED"), ("unpause", "ACTIVE"), ("stop", "SHUTOFF"), ("start", "ACTIVE")]
PROXY_PORT = 23100  # this helper's port block


def section(keys: Dict[str, str], nova_url: str, extra: Dict[str, str]) -> str:
    lines = {**keys, **extra, "nova_base_url": f"{nova_url}/v2.1"}
    return f"[{SECTION}]\n" + "".join(f"{key} = {value}\n" for key, value in lines.items())


def exchange() -> str:
    name = f"bench-events-{uuid.uuid4().hex[:8]}"
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_declare(name, "fanout", auto_delete=False)
    return name


def drop_exchange(name: str) -> None:
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_delete(name)


class Run:
    """An agent process watching one section, its events and its Nova requests."""

    def __init__(self, workdir: str, config_text: str, interval: float, events_exchange: str,
                 proxy: Proxy) -> None:
        os.makedirs(workdir, exist_ok=True)
        config = os.path.join(workdir, "cloudmanagers.conf")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(config_text)
        os.chmod(config, 0o600)
        self.proxy = proxy
        self.listener = EventListener(events_exchange)
        self.arrivals: List[float] = []
        self.agent = harness.Agent(workdir, config, events={"exchange": events_exchange, "poll_interval": interval,
                                                            "reconcile_interval": 3600}).start()
        state = os.path.join(workdir, f"events-{SECTION}.json")
        deadline = time.monotonic() + 120
        while not os.path.exists(state):  # the first full list is done
            if time.monotonic() > deadline:
                raise RuntimeError(f"no first reconcile; the agent's log:\n{self.agent.tail()}")
            time.sleep(0.1)

    def events(self) -> List[Tuple[float, Dict[str, Any]]]:
        """(arrival, status) of every event so far."""
        self.listener.connection.process_data_events(time_limit=0)
        while len(self.arrivals) < len(self.listener.messages):
            self.arrivals.append(time.time())
        return [(arrived, body["status"]) for arrived, (_props, body) in zip(self.arrivals, self.listener.messages)]

    def pump(self, seconds: float) -> None:
        """Receive events for ``seconds``, stamping each on arrival."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.listener.connection.process_data_events(time_limit=0.01)
            self.events()

    def close(self) -> None:
        self.agent.stop()
        self.listener.close()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", self.agent.uuid], capture_output=True)


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def idle_requests(run: Run, interval: float, intervals: int) -> float:
    """Nova requests per polling interval while nothing changes."""
    run.pump(interval)  # whatever was going on ends
    before = run.proxy.count()
    run.pump(interval * intervals)
    return (run.proxy.count() - before) / intervals


# -- the devcloud part -----------------------------------------------------------------------------


def nova_clients(facts: Dict[str, Any]) -> Tuple[Any, Any]:
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3
    from novaclient import client as nova_client

    def client(who: str) -> Any:
        auth = v3.Password(auth_url=facts["auth_url"], **facts["credentials"][who])
        return nova_client.Client("2.52", session=ks_session.Session(auth=auth, timeout=60))

    return client("demo"), client("admin")


def wait_all(nova: Any, ids: List[str], status: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        servers = {server.id: server for server in nova.servers.list(search_opts={"name": "^bench-ev-"})}
        pending = {vm for vm in pending if not (servers.get(vm) and servers[vm].status == status
                                                  and not getattr(servers[vm], "OS-EXT-STS:task_state"))}
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} VMs not {status}")
        time.sleep(1)


def latency_rounds(run: Run, nova: Any, ids: List[str], interval: float) -> Dict[str, Any]:
    """Each round changes every VM once, at random moments over one interval, and waits for its events."""
    called: Dict[Tuple[str, int], float] = {}
    for number, (action, status) in enumerate(ROUNDS):
        order = random.sample(ids, len(ids))
        spacing = interval / len(ids)
        for vm_id in order:
            getattr(nova.servers, action)(vm_id)
            called[(vm_id, number)] = time.time()
            run.pump(random.uniform(0, 2 * spacing))
        wait_all(nova, ids, status)
        run.pump(interval + 2)  # the last changes' events
    return tally(run.events(), ids, called)


def tally(events: List[Tuple[float, Dict[str, Any]]], ids: List[str],
          called: Dict[Tuple[str, int], float]) -> Dict[str, Any]:
    """Per VM: its events in order; a round's event is its first at-rest event in the round's state."""
    by_vm: Dict[str, List[Tuple[float, Dict[str, Any]]]] = {vm_id: [] for vm_id in ids}
    for arrived, status in events:
        if status.get("vm_id") in by_vm:
            by_vm[status["vm_id"]].append((arrived, status))
    from_call, from_record, duplicates, misses, at_rest, in_task = [], [], 0, 0, 0, 0
    for vm_id, stream in by_vm.items():
        previous: Optional[Tuple[str, ...]] = None
        for _arrived, status in stream:
            duplicates += fingerprint(status) == previous
            previous = fingerprint(status)
            at_rest += not status["vm_task_state"]
            in_task += bool(status["vm_task_state"])
        cursor = 0
        for number, (_action, wanted) in enumerate(ROUNDS):
            found = next((index for index in range(cursor, len(stream))
                          if stream[index][1]["vm_status"] == wanted and not stream[index][1]["vm_task_state"]), None)
            if found is None:
                misses += 1
                continue
            cursor = found + 1
            arrived, status = stream[found]
            from_call.append(arrived - called[(vm_id, number)])
            updated = datetime.fromisoformat(status["vm_updated"].replace("Z", "+00:00")).timestamp()
            from_record.append(arrived - updated)
    return {"transitions": len(ids) * len(ROUNDS), "at_rest_events": at_rest, "task_state_events": in_task,
            "duplicates": duplicates, "misses": misses,
            "p50_from_call": statistics.median(from_call), "p95_from_call": percentile(from_call, 0.95),
            "p50_from_record": statistics.median(from_record), "p95_from_record": percentile(from_record, 0.95)}


def devcloud_part(args: argparse.Namespace, events_exchange: str, workdir: str) -> Dict[str, Any]:
    facts = harness.devcloud_facts()
    nova, admin = nova_clients(facts)
    quota = admin.quotas.get(facts["demo_project_id"]).instances
    admin.quotas.update(facts["demo_project_id"], instances=max(quota, args.vms + 20))  # put back at the end
    keys = dict(harness_section(facts))
    proxy = Proxy(facts["endpoints"]["compute"].split("/v2.1")[0], PROXY_PORT)
    results: Dict[str, Any] = {}
    ids: List[str] = []
    try:
        ids = [nova.servers.create(f"bench-ev-{index:03d}", facts["image_id"], "1", nics="auto").id
               for index in range(10)]
        wait_all(nova, ids, "ACTIVE")
        run = Run(os.path.join(workdir, "idle10"), section(keys, proxy.url, {}), args.interval, events_exchange, proxy)
        try:
            results["idle_requests_10"] = idle_requests(run, args.interval, args.idle_intervals)
        finally:
            run.close()
        ids += [nova.servers.create(f"bench-ev-{index:03d}", facts["image_id"], "1", nics="auto").id
                for index in range(10, args.vms)]
        wait_all(nova, ids, "ACTIVE")
        for name, extra in SOURCES.items():
            run = Run(os.path.join(workdir, name), section(keys, proxy.url, extra(facts)), args.interval,
                      events_exchange, proxy)
            try:
                results[name] = latency_rounds(run, nova, ids, args.interval)
            finally:
                run.close()
    finally:
        for vm_id in ids:
            nova.servers.delete(vm_id)
        wait_gone(nova, ids)
        admin.quotas.update(facts["demo_project_id"], instances=quota)
        proxy.close()
    return results


def wait_gone(nova: Any, ids: List[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while {server.id for server in nova.servers.list(search_opts={"name": "^bench-ev-"})} & set(ids):
        if time.monotonic() > deadline:
            return
        time.sleep(1)


def harness_section(facts: Dict[str, Any]) -> Dict[str, str]:
    """The devcloud's v3 section's keys (credentials, Keystone), without any notification bus."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(facts["cloudmanagers_conf"])
    return {key: value for key, value in parser["devcloud"].items() if not key.startswith("notifications")}


# -- the 500 VMs part ----------------------------------------------------------------------------


def fake_part(args: argparse.Namespace, events_exchange: str, workdir: str) -> Dict[str, Any]:
    cloud = HTTPCloud().start()
    for index in range(500):
        cloud.cloud.add_server(f"vm{index:03d}", updated=f"2026-11-25T10:{index // 60 % 60:02d}:{index % 60:02d}Z")
    proxy = Proxy(cloud.url, PROXY_PORT + 1)
    keys = {"cm_type": "openstack", "keystone_base_url": f"{cloud.url}/v3", "project_name": "demo",
            "username": "demo", "password": cloud.cloud.password}
    run = Run(os.path.join(workdir, "idle500"), section(keys, proxy.url, {}), args.interval, events_exchange, proxy)
    try:
        requests_per_interval = idle_requests(run, args.interval, args.idle_intervals)
        pid = run.agent.process.pid
        rss_before, cpu_before, started = rss_kib(pid), cpu_seconds(pid), time.monotonic()
        run.pump(args.idle)
        cpu = cpu_seconds(pid) - cpu_before
        return {"idle_requests_500": requests_per_interval, "rss_before_kib": rss_before, "rss_after_kib": rss_kib(pid),
                "cpu_share": cpu / (time.monotonic() - started), "idle_seconds": args.idle,
                "events_while_idle": len(run.events())}
    finally:
        run.close()
        proxy.close()
        cloud.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=50, help="VMs changed on the devcloud (default 50)")
    parser.add_argument("--interval", type=float, default=10.0, help="[events] poll_interval (default 10)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds idle for CPU and RSS (default 60)")
    parser.add_argument("--idle-intervals", type=int, default=6, help="polling intervals counted idle (default 6)")
    parser.add_argument("--skip-devcloud", action="store_true", help="only the 500 VMs on the HTTP fake")
    args = parser.parse_args(argv)
    events_exchange = exchange()
    workdir = tempfile.mkdtemp(prefix="bench-events-")
    report: Dict[str, Any] = {"interval": args.interval, "vms": args.vms}
    try:
        report.update(fake_part(args, events_exchange, workdir))
        if not args.skip_devcloud:
            report.update(devcloud_part(args, events_exchange, workdir))
    finally:
        drop_exchange(events_exchange)
    print(json.dumps(report, indent=2, sort_keys=True))
    print_summary(report)
    return 0


def print_summary(report: Dict[str, Any]) -> None:
    interval = report["interval"]
    print(f"\nNova requests per idle {interval:g} s interval: 500 VMs (HTTP fake) {report['idle_requests_500']:.2f}"
          + (f", 10 VMs (devcloud) {report['idle_requests_10']:.2f}" if "idle_requests_10" in report else "")
          + " (target 1)")
    print(f"agent idle with 500 VMs for {report['idle_seconds']:g} s: CPU {report['cpu_share'] * 100:.2f}% of a core, "
          f"RSS {report['rss_before_kib'] / 1024:.1f} -> {report['rss_after_kib'] / 1024:.1f} MiB")
    for name in SOURCES:
        if name not in report:
            continue
        result = report[name]
        print(f"{name}: {result['transitions']} transitions of {report['vms']} VMs: change -> event p50 "
              f"{result['p50_from_call']:.2f} s, p95 {result['p95_from_call']:.2f} s from the novaclient call "
              f"(p50 {result['p50_from_record']:.2f} s, p95 {result['p95_from_record']:.2f} s from Nova's updated "
              f"time; target < {interval + 1:g} s); events at rest {result['at_rest_events']} "
              f"(+{result['task_state_events']} task-state events), duplicates {result['duplicates']}, "
              f"misses {result['misses']}")


if __name__ == "__main__":
    raise SystemExit(main())
