"""What the agents of a group say about themselves on ``/metrics`` and ``/healthz``, checked
against what the broker and a fault run saw.

The counters of a process die with it, so a test scrapes an agent just before it kills it and
adds those figures to what the agents alive at the end report.
"""

import json
import time
from collections import defaultdict
from typing import Dict, Iterable, Tuple

from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster
from tests.support.ha_group import AgentGroup, AgentProcess, Node, consumers, url
from tests.support.ha_load import Client, FaultRun, message

ROLE = "cloudmanagers_agent_role"
REQUESTS = "cloudmanagers_agent_requests_total"
Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(agent: AgentProcess) -> Samples:
    """Every sample of an agent's ``/metrics``: {(name, sorted labels): value}; {} when unreachable."""
    status, text = agent.http("/metrics")
    if status != 200:
        return {}
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(value for (sample, found), value in samples.items()
               if sample == name and set(labels.items()) <= set(found))


def by_label(samples: Samples, name: str, label: str) -> Dict[str, float]:
    sums: Dict[str, float] = defaultdict(float)
    for (sample, found), value in samples.items():
        if sample == name:
            sums[dict(found).get(label, "")] += value
    return dict(sums)


def combined(all_samples: Iterable[Samples]) -> Samples:
    out: Samples = defaultdict(float)
    for samples in all_samples:
        for key, value in samples.items():
            out[key] += value
    return dict(out)


def poke(group: AgentGroup, node: Node, count: int = 5) -> None:
    """A few pings through the group, so the active agent has just worked (an agent reports
    ``active`` once it gets deliveries)."""
    client = Client(url(node), group.uuid)
    try:
        for _ in range(count):
            client.send("ping", None, message("ping", ""))
        deadline = time.monotonic() + 30
        while client.unanswered() and time.monotonic() < deadline:
            client.pump(0.1)
        assert not client.unanswered(), "the group does not answer pings"
    finally:
        client.close()


def roles(group: AgentGroup, node: Node) -> Dict[int, Tuple[int, Dict[str, object], Samples]]:
    """{pid: (/healthz status, its JSON, /metrics)} of every agent alive, checked against the broker:
    each is healthy; exactly one reports active, the one the broker delivers to; each reports the
    node the broker has its connection on."""
    addresses = {each.name: each.address for each in Cluster().nodes()}
    poke(group, node)
    on_broker = {each.pid: each for each in consumers(node, group.uuid)}
    seen = {}
    for agent in group.agents:
        status, body = agent.http("/healthz")
        health = json.loads(body) if status else {}
        samples = scrape(agent)
        seen[agent.pid] = (status, health, samples)
        assert status == 200 and health.get("status") == "ok", (agent.slot, status, body)
        role = [labels for (name, labels), value in samples.items() if name == ROLE and value == 1]
        assert role == [((ROLE, health["role"]),)], (agent.slot, role, health)
        broker = on_broker[agent.pid]
        assert health["role"] == ("active" if broker.active else "standby"), (agent.slot, health, broker)
        assert health["broker"] == addresses[broker.node], (agent.slot, health, broker)
    assert sum(1 for _s, health, _m in seen.values() if health["role"] == "active") == 1
    return seen


def check_metrics(group: AgentGroup, node: Node, run: FaultRun, before: Dict[int, Samples], redeliveries: int = 0,
                  reconnects: int = 0) -> str:
    """/healthz and /metrics of the group after a fault run: the roles as the broker sees them,
    and the counters of the agents alive plus those scraped just before their kill adding up to
    what the run sent (give or take what a killed agent ended between its scrape and its
    death, and what ran twice after a redelivery); at least ``redeliveries`` and ``reconnects``.
    Returns the figures, for the report."""
    seen = roles(group, node)
    alive = [samples for _status, _health, samples in seen.values()]
    everything = combined([*before.values(), *alive])
    sent: Dict[str, int] = defaultdict(int)
    for each in run.client.sent.values():
        sent[each.message["action"]] += 1
    slack = 16 * (len(before) + 1)  # a prefetch window per agent that went
    ended = by_label(everything, REQUESTS, "action")
    for action, count in sent.items():
        assert count - slack <= ended.get(action, 0) <= count + slack, (action, count, ended)
    outcomes = by_label(everything, REQUESTS, "outcome")
    assert set(outcomes) <= {"ok", "not_run"}, outcomes  # not_run: left to the broker after a lost channel
    assert outcomes.get("not_run", 0) <= slack, outcomes
    assert total(everything, "cloudmanagers_agent_request_duration_seconds_count") == total(everything, REQUESTS)
    assert all(total(samples, "cloudmanagers_agent_requests_in_flight") == 0 for samples in alive)
    changes = total(everything, "cloudmanagers_openstack_requests_total", method="POST")
    assert changes >= sent["create"] + sent["update"] - slack, (changes, sent)
    assert total(everything, "cloudmanagers_openstack_token_requests_total") >= 1
    redelivered = total(everything, "cloudmanagers_agent_redeliveries_total")
    reconnected = total(everything, "cloudmanagers_agent_reconnects_total")
    assert redelivered >= redeliveries and reconnected >= reconnects, (redelivered, reconnected)
    return (f"requests ended by action {dict(ended)}, outcomes {dict(outcomes)}; redeliveries "
            f"{redelivered:g}, reconnects {reconnected:g}, OpenStack POSTs {changes:g}; roles and broker nodes as the broker sees them")


def check_abandoned(group: AgentGroup, node: Node, count: int) -> None:
    """The agents alive count ``count`` abandoned requests (the ones that died never answered one)."""
    seen = roles(group, node)
    abandoned = sum(total(samples, "cloudmanagers_agent_abandoned_requests_total") for _s, _h, samples in seen.values())
    assert abandoned == count, (abandoned, count)
