"""The HA fault runs: a request mix, a collector of replies, Nova's view of the VMs, the figures.

A run publishes 1,000 requests at once (cheap reads, VM reads, state changes, creates and the
first step of resizes) straight to the agents' queue with pika, each with its own correlation
id, and counts every reply per correlation id. Two faults are injected while it runs, at moments
chosen from Nova's own view: the first while a create has made its VM but not answered yet, the
second while a resize is under way and unanswered, which is when a redelivery is ambiguous (or,
when the first fault outlasted the resizes, while another change of a VM is). The
second step of each resize (the confirming update) is only sent once the first step's reply has
arrived, after reading Nova's state (which must still be VERIFY_RESIZE), so a confirmation seen
earlier than that message cannot be its own.

The figures are the issue's: requests without an answer, duplicate VMs (every VM ever created
under a name of the run, deleted ones included), unrequested resize confirmations (Nova's
instance actions). Duplicate replies after a redelivery are at-least-once artefacts: counted and
reported, while the effects must be exactly once.
"""

import json
import threading
import time
import uuid as uuidlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

import pika
from novaclient import exceptions as nova_exc

SETTLED = ("ACTIVE", "SHUTOFF")
MAX_LOST_VMS = 2  # of the 20: VMs a failure of the cloud itself may touch before a run says too little
IN_RESIZE = ("RESIZE", "VERIFY_RESIZE")


# -- the requests ----------------------------------------------------------------------------------


@dataclass
class Sent:
    """One published request."""

    correlation_id: str
    kind: str
    vm: Optional[str]
    message: Dict[str, Any]
    sent_at: float  # time.time(), comparable with Nova's timestamps


def message(action: str, cm: str, **attributes: Any) -> Dict[str, Any]:
    return {"collection": "cloudmanagers", "action": action, "id": cm, "attributes": attributes}


class Mix:
    """The requests of one run: per VM a create, then a read and either a resize's first step
    or two state changes (each VM's requests in order), spread among cheap reads.

    Cheap reads list the cloud managers (no OpenStack call), so 900 of them cost the devcloud
    nothing; the VM reads and the VM list reads do reach Nova.
    """

    def __init__(self, prefix: str, cm: str, image: str, total: int = 1000, creates: int = 20, resizes: int = 5,
                 flavor: str = "m1.tiny", new_flavor: str = "m1.small", wait: int = 90) -> None:
        self.cm, self.image, self.flavor, self.new_flavor, self.wait = cm, image, flavor, new_flavor, wait
        self.vms = [f"{prefix}-{n:02d}" for n in range(creates)]
        self.resized = self.vms[:resizes]
        self.total = total

    def chains(self) -> List[List[Tuple[str, str, Dict[str, Any]]]]:
        chains = []
        for vm in self.vms:
            chain = [("create", vm, message("create", self.cm, name=vm, flavor=self.flavor, image=self.image,
                                            wait=self.wait)),
                     ("vm-read", vm, message("read", self.cm, name=vm))]
            if vm in self.resized:
                chain.append(("resize", vm, message("update", self.cm, name=vm, flavor=self.new_flavor,
                                                    wait=self.wait)))
            else:
                chain += [("state", vm, message("update", self.cm, name=vm, status=status, wait=self.wait))
                          for status in ("SHUTOFF", "ACTIVE")]
            chains.append(chain)
        return chains

    def opening(self) -> List[Tuple[str, Optional[str], Dict[str, Any]]]:
        """Everything sent at once: all but the confirming updates, which come later."""
        chains = self.chains()
        steps = [step for depth in range(max(map(len, chains))) for chain in chains if depth < len(chain)
                 for step in [chain[depth]]]
        steps += [("list-read", None, message("read", self.cm))] * len(self.vms)
        count = self.total - len(self.resized)
        cheap = count - len(steps)
        assert cheap > 0, "the mix has no room for its reads"
        every = count / len(steps)
        placed = {int(n * every): step for n, step in enumerate(steps)}
        return [placed.get(n, ("read", None, message("read", ""))) for n in range(count)]

    def confirm(self, vm: str) -> Tuple[str, str, Dict[str, Any]]:
        """The seed's second resize message: the same flavor again confirms the resize."""
        return ("confirm", vm, message("update", self.cm, name=vm, flavor=self.new_flavor, wait=self.wait))


class Client:
    """Publishes to the agents' queue (with publisher confirms: no request is lost before the
    broker has it) and collects every reply on a private queue, by correlation id."""

    def __init__(self, url: str, queue: str) -> None:
        self.queue = queue
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)
        self.sent: Dict[str, Sent] = {}
        self.replies: Dict[str, List[Tuple[float, Dict[str, Any]]]] = defaultdict(list)
        self.stray = 0  # replies to correlation ids this client never sent
        self._first: List[str] = []

    def _on_reply(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        correlation_id = properties.correlation_id
        if correlation_id not in self.sent:
            self.stray += 1
            return
        if not self.replies[correlation_id]:
            self._first.append(correlation_id)
        self.replies[correlation_id].append((time.time(), json.loads(body)))

    def send(self, kind: str, vm: Optional[str], body: Dict[str, Any]) -> Sent:
        sent = Sent(str(uuidlib.uuid4()), kind, vm, body, time.time())
        self.sent[sent.correlation_id] = sent
        properties = pika.BasicProperties(correlation_id=sent.correlation_id, reply_to=self.reply_queue,
                                          headers={"reply_exchange": ""}, content_type="application/json")
        self.channel.basic_publish("", self.queue, json.dumps(body).encode(), properties, mandatory=True)
        return sent

    def pump(self, seconds: float) -> List[Sent]:
        """Process the connection for ``seconds``; the requests answered for the first time."""
        self.connection.process_data_events(time_limit=seconds)
        first, self._first = self._first, []
        return [self.sent[correlation_id] for correlation_id in first]

    def unanswered(self) -> List[Sent]:
        return [sent for correlation_id, sent in self.sent.items() if not self.replies.get(correlation_id)]

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


# -- Nova's view ---------------------------------------------------------------------------------


def nova_state(server: Any) -> Tuple[str, Optional[str], str]:
    return server.status, getattr(server, "OS-EXT-STS:task_state", None), server.flavor["original_name"]


class VmWatch:
    """Polls Nova for the run's VMs in a thread: the latest state of each, and the first time a
    resized VM was seen confirmed (settled on its new flavor)."""

    def __init__(self, nova: Any, prefix: str, new_flavor: str, period: float = 0.3) -> None:
        self._nova, self._prefix, self._new_flavor, self._period = nova, prefix, new_flavor, period
        self.latest: Dict[str, Tuple[str, Optional[str], str]] = {}
        self.confirmed_at: Dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="vm-watch", daemon=True)

    def start(self) -> "VmWatch":
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                servers = self._nova.servers.list(search_opts={"name": f"^{self._prefix}-"})
            except Exception:  # noqa: BLE001 - a slow devcloud must not end the watch
                servers = None
            now = time.time()
            for server in servers or []:
                state = nova_state(server)
                self.latest[server.name] = state
                if state[0] in SETTLED and not state[1] and state[2] == self._new_flavor:
                    self.confirmed_at.setdefault(server.name, now)
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One fault of a run: ``inject`` runs in a thread as soon as ``due`` says why (a text)."""

    name: str
    due: Callable[["FaultRun"], Optional[str]]
    inject: Callable[[], str]
    why: str = ""
    in_flight: int = 0  # requests without an answer when it was injected
    started: float = 0.0
    ended: float = 0.0
    note: str = ""
    error: str = ""


def create_in_flight(run: "FaultRun") -> Optional[str]:
    """A create has made its VM in Nova and not answered yet."""
    return next((f"the create of {vm} made its VM, unanswered" for vm in run.mix.vms
                 if vm in run.watch.latest and not run.answered("create", vm)), None)


def resize_in_flight(run: "FaultRun") -> Optional[str]:
    """A resize is under way in Nova and its first step has not answered yet; failing that (the
    resizes are over), a VM change under way and unanswered; and so that the run always gets
    its second fault, at the latest when nearly every request is answered."""
    for vm in run.mix.resized:
        status = run.watch.latest.get(vm, ("",))[0]
        if status in IN_RESIZE and not run.answered("resize", vm):
            return f"the resize of {vm} under way ({status}), unanswered"
    if all(run.answered("resize", vm) for vm in run.mix.resized):
        for vm, (status, task, _flavor) in list(run.watch.latest.items()):
            kind = run.change_in_flight(vm)
            if task and kind:
                return f"a {kind} of {vm} under way ({status}/{task}), unanswered"
    if len(run.client.unanswered()) < len(run.client.sent) // 20:
        return "no resize seen under way; under 5 % of the requests unanswered"
    return None


class FaultRun:
    """Sends the mix, injects the faults, sends each confirmation when its turn comes, and waits
    until every request has an answer (or ``timeout``)."""

    def __init__(self, client: Client, mix: Mix, watch: VmWatch, faults: List[Fault], nova: Any) -> None:
        self.client, self.mix, self.watch, self.faults, self._nova = client, mix, watch, faults, nova
        self.confirm_sent: Dict[str, float] = {}
        self.before_confirm: Dict[str, Tuple[str, Optional[str], str]] = {}  # Nova's state just before
        self._by_step: Dict[Tuple[str, str], List[str]] = {}
        self.started = self.ended = 0.0

    def answered(self, kind: str, vm: str) -> bool:
        """Whether the last request of that kind about ``vm`` has an answer."""
        sent = self._by_step.get((kind, vm), [])
        return bool(sent) and bool(self.client.replies.get(sent[-1]))

    def change_in_flight(self, vm: str) -> Optional[str]:
        """The kind of a request changing ``vm`` that has been sent and not answered, if any."""
        return next((kind for kind in ("create", "state", "resize", "confirm")
                     if any(not self.client.replies.get(each) for each in self._by_step.get((kind, vm), []))), None)

    def _send(self, kind: str, vm: Optional[str], body: Dict[str, Any]) -> None:
        sent = self.client.send(kind, vm, body)
        if vm:
            self._by_step.setdefault((kind, vm), []).append(sent.correlation_id)

    def run(self, timeout: float = 240) -> None:
        self.started = time.time()
        for step in self.mix.opening():
            self._send(*step)
        threads: List[threading.Thread] = []
        pending = list(self.faults)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sent in self.client.pump(0.05):
                if sent.kind == "resize":
                    self._confirm(sent)
            why = pending[0].due(self) if pending and not any(thread.is_alive() for thread in threads) else None
            if why:
                fault = pending.pop(0)
                fault.why, fault.in_flight = why, len(self.client.unanswered())
                threads.append(threading.Thread(target=self._inject, args=(fault,), daemon=True))
                threads[-1].start()
            if not pending and not any(t.is_alive() for t in threads) and not self.client.unanswered():
                break
        self.ended = time.time()
        self.client.pump(1.0)  # late duplicates
        for thread in threads:
            thread.join(120)

    def _inject(self, fault: Fault) -> None:
        fault.started = time.time()
        try:
            fault.note = fault.inject()
        except Exception as err:  # noqa: BLE001 - reported in the figures, the run goes on
            fault.error = f"{type(err).__name__}: {err}"
        fault.ended = time.time()

    def _confirm(self, sent: Sent) -> None:
        """The first step answered: note Nova's state, then send the confirming update."""
        answer = self.client.replies[sent.correlation_id][0][1]
        if "error" in answer:
            return
        server = self._nova.servers.list(search_opts={"name": f"^{sent.vm}$"})
        self.before_confirm[sent.vm] = nova_state(server[0]) if server else ("MISSING", None, "")
        self.confirm_sent[sent.vm] = time.time()
        self._send(*self.mix.confirm(sent.vm))


# -- the figures -----------------------------------------------------------------------------------


def nova_time(text: str) -> float:
    """Nova's naive UTC timestamp (e.g. an instance action's start_time) as seconds since the epoch."""
    return datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()


@dataclass
class Figures:
    """What a run produced; ``problems`` lists every breach of the issue's figures."""

    requests: int = 0
    answered: int = 0
    unanswered: List[str] = field(default_factory=list)
    error_replies: List[str] = field(default_factory=list)
    duplicate_replies: int = 0
    differing_duplicates: int = 0
    vms: int = 0
    duplicate_vms: List[str] = field(default_factory=list)
    unrequested_confirmations: List[str] = field(default_factory=list)
    wrong_final_states: List[str] = field(default_factory=list)
    cloud_errors: List[str] = field(default_factory=list)  # the cloud's own failures: reported, not judged
    lost_vms: List[str] = field(default_factory=list)  # VMs a cloud failure touched: no final state to judge
    seconds: float = 0.0
    faults: List[str] = field(default_factory=list)

    @property
    def problems(self) -> List[str]:
        too_many = ([f"{len(self.lost_vms)} VMs met a failure of the cloud itself: the run says too little"]
                    if len(self.lost_vms) > MAX_LOST_VMS else [])
        return [*self.unanswered, *self.error_replies, *self.duplicate_vms, *self.unrequested_confirmations,
                *self.wrong_final_states, *[fault for fault in self.faults if "failed" in fault], *too_many]

    def summary(self) -> str:
        return (f"{self.requests} requests in {self.seconds:.1f} s: {self.answered} answered, "
                f"{len(self.unanswered)} without an answer, {len(self.error_replies)} error replies "
                f"(+{len(self.cloud_errors)} from failures of the cloud itself{self._lost()}), "
                f"{self.duplicate_replies} duplicate replies ({self.differing_duplicates} differing); "
                f"{self.vms} VMs, {len(self.duplicate_vms)} duplicate VMs, "
                f"{len(self.unrequested_confirmations)} unrequested resize confirmations; faults: "
                + "; ".join(self.faults))

    def _lost(self) -> str:
        return f", touching {', '.join(self.lost_vms)}" if self.lost_vms else ""


def cloud_failure(error: str) -> bool:
    """An error the cloud made by itself, whatever the agents do: an HTTP 5xx from OpenStack, or
    a VM Nova put in ERROR (e.g. "No valid host" when its scheduler could not reach Placement).
    A shared devcloud on 2 cores shows a few; they say nothing about the agents' HA."""
    return "(HTTP 5" in error or " went to ERROR" in error


def tally(run: FaultRun, admin_nova: Any, nova: Any) -> Figures:
    """Count the replies, then read what really happened from Nova (deleted VMs included)."""
    client, mix = run.client, run.mix
    figures = Figures(requests=len(client.sent), seconds=run.ended - run.started)
    for correlation_id, sent in client.sent.items():
        replies = [body for _at, body in client.replies.get(correlation_id, [])]
        if not replies:
            figures.unanswered.append(f"no answer: {sent.kind} {sent.vm or ''} {correlation_id}")
            continue
        figures.answered += 1
        figures.duplicate_replies += len(replies) - 1
        figures.differing_duplicates += sum(1 for body in replies[1:] if body != replies[0])
        errors = [body["error"] for body in replies if "error" in body]
        if errors and all(map(cloud_failure, errors)):
            figures.cloud_errors.append(f"{sent.kind} {sent.vm or ''}: {errors[0]}")
            if sent.vm and sent.vm not in figures.lost_vms:
                figures.lost_vms.append(sent.vm)
        elif errors:
            figures.error_replies.append(f"error reply to {sent.kind} {sent.vm or ''}: {errors[0]}")
    # what followed a cloud failure on a VM (a stop of a VM in ERROR...) is its consequence
    figures.error_replies = [error for error in figures.error_replies
                             if not any(f" {vm}: " in error for vm in figures.lost_vms)]
    for fault in run.faults:
        outcome = f"failed ({fault.error})" if fault.error else fault.note
        figures.faults.append(f"{fault.name} at +{fault.started - run.started:.1f} s ({fault.why}; {fault.in_flight} "
                              f"requests unanswered): {outcome}" if fault.started
                              else f"{fault.name}: never injected (failed)")
    ever = admin_nova.servers.list(search_opts={
        "all_tenants": True, "name": f"^{mix.vms[0].rsplit('-', 1)[0]}-",
        "changes-since": datetime.fromtimestamp(run.started - 60, timezone.utc).isoformat()})
    by_name: Dict[str, List[Any]] = defaultdict(list)
    for server in ever:
        by_name[server.name].append(server)
    figures.vms = len(ever)
    for vm in mix.vms:
        if len(by_name[vm]) != 1:
            figures.duplicate_vms.append(f"{vm}: {len(by_name[vm])} VMs ever created ({[s.id for s in by_name[vm]]})")
    for vm in mix.vms:
        for server in by_name[vm][:1]:
            _check_vm(run, nova, vm, server.id, figures)
    return figures


def _check_vm(run: FaultRun, nova: Any, vm: str, server_id: str, figures: Figures) -> None:
    """Nova's instance actions and final state of one VM against what the run asked of it."""
    mix = run.mix
    actions = [(action.action, nova_time(action.start_time)) for action in nova.instance_action.list(server_id)]
    confirms = [start for name, start in actions if name == "confirmResize"]
    resizes = [name for name, _start in actions if name == "resize"]
    try:
        status, task, flavor = nova_state(nova.servers.get(server_id))
    except nova_exc.NotFound:
        status, task, flavor = "DELETED", None, ""
    if vm not in mix.resized:
        if confirms or resizes:
            figures.unrequested_confirmations.append(f"{vm}: {actions} but no resize was asked")
        if (status, flavor) != ("ACTIVE", mix.flavor) and vm not in figures.lost_vms:
            figures.wrong_final_states.append(f"{vm}: {status}/{task} {flavor}, expected ACTIVE {mix.flavor}")
        return
    sent = run.confirm_sent.get(vm)
    seen = run.watch.confirmed_at.get(vm)
    before = run.before_confirm.get(vm)
    if len(confirms) > 1 or (len(resizes) != 1 and vm not in figures.lost_vms):
        figures.unrequested_confirmations.append(f"{vm}: {len(resizes)} resizes, {len(confirms)} confirmations")
    if confirms and (sent is None or confirms[0] < int(sent)):  # Nova keeps whole seconds
        figures.unrequested_confirmations.append(f"{vm}: confirmed by Nova at {confirms[0]:.0f} before the "
                                                 f"confirming update was sent ({sent})")
    if seen is not None and (sent is None or seen < sent):
        figures.unrequested_confirmations.append(f"{vm}: seen confirmed at {seen:.2f} before the confirming "
                                                 f"update was sent ({sent})")
    if before is not None and before[0] != "VERIFY_RESIZE":
        figures.unrequested_confirmations.append(f"{vm}: {before} just before the confirming update, not "
                                                 "VERIFY_RESIZE")
    if (status, flavor) != ("ACTIVE", mix.new_flavor) and vm not in figures.lost_vms:
        figures.wrong_final_states.append(f"{vm}: {status}/{task} {flavor}, expected ACTIVE {mix.new_flavor}")


def delete_vms(nova: Any, prefix: str, timeout: float = 120) -> int:
    """Delete every VM of the run (whatever the plugin did), and wait until Nova has none left."""
    servers = nova.servers.list(search_opts={"name": f"^{prefix}-"})
    for server in servers:
        try:
            nova.servers.delete(server.id)
        except nova_exc.NotFound:
            pass
    deadline = time.monotonic() + timeout
    while nova.servers.list(search_opts={"name": f"^{prefix}-"}) and time.monotonic() < deadline:
        time.sleep(0.5)
    return len(servers)
