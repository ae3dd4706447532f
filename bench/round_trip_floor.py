"""How low the agent's round trip can go: bare pika echoes that add, one at a time, what the agent
must do, against the bare echo of ``bench.agent_overhead``, same broker, same body.

Issue 13 asks for the agent's round trip at most 1.2x a bare pika echo. The agent may not run a
request on pika's I/O thread (the controller blocks on HTTP for up to a minute, and the I/O
thread carries heartbeats and every other request), and it acks a request only once the broker
has confirmed its reply (what makes nothing lost). Each echo below does nothing but the bare
one's work and the steps it names, so its ratio is a floor for any agent that takes those steps:

    select      the bare echo on pika's SelectConnection (the agent's adapter), reply and ack inline
    handoff     + the body handed to a worker thread and the reply handed back to the I/O thread
    confirmed   + the reply published with publisher confirms, the request acked on the confirm

``bench.agent_ceiling`` runs two more: ``nova``, ``confirmed`` whose workers also send the raw Nova
request of a VM-details read to an in-process OpenStack fake (the floor of the agent's ceiling),
and ``nova-unconfirmed``, the same with replies and acks as the bare echo's.

Rounds alternate between the echoes and the agent (the machine's load drifts); each round gives
a ratio to the bare echo of the same round; the median is the figure.
"""

import json
import signal
import statistics
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List

import pika

from bench.agent_harness import BROKER, Client, Process, read_request

ROUNDS, SERIAL, WORKERS, PREFETCH = 15, 200, 8, 16
MODES = ("select", "handoff", "confirmed")
NOVA_READ, NOVA_READ_UNCONFIRMED = "nova", "nova-unconfirmed"
Work = Callable[[bytes], None]


class FloorEcho:
    """An echo server on SelectConnection that takes the steps its ``mode`` names, and no other."""

    def __init__(self, queue: str, mode: str, work: Work) -> None:
        self.queue, self.work = queue, work
        self.inline = mode == "select"
        self.confirmed = mode in ("confirmed", NOVA_READ)
        self.pool = ThreadPoolExecutor(max_workers=WORKERS)
        self.unconfirmed: Dict[int, int] = {}  # publish sequence number -> the request's delivery tag
        self.published = 0
        self.connection = pika.SelectConnection(BROKER, on_open_callback=self._on_open)

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_consume_channel)

    def _on_consume_channel(self, channel: Any) -> None:
        self.consume = self.publish = channel
        if self.confirmed:  # replies on a confirm channel of their own, as the agent's
            self.connection.channel(on_open_callback=self._on_publish_channel)
        else:
            self._declare()

    def _on_publish_channel(self, channel: Any) -> None:
        self.publish = channel
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._declare())

    def _declare(self) -> None:
        self.consume.queue_declare(self.queue, auto_delete=True, callback=lambda _frame: self.consume.basic_qos(
            prefetch_count=PREFETCH, callback=lambda _frame: self.consume.basic_consume(self.queue, self._on_message)))

    def _on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        def reply() -> None:
            self._reply(method.delivery_tag, properties, body)
        if self.inline:
            reply()
        else:
            self.pool.submit(self._in_worker, body, reply)

    def _in_worker(self, body: bytes, reply: Callable[[], None]) -> None:
        self.work(body)
        self.connection.ioloop.add_callback_threadsafe(reply)

    def _reply(self, tag: int, properties: Any, body: bytes) -> None:
        self.publish.basic_publish("", properties.reply_to, body,
                                   pika.BasicProperties(correlation_id=properties.correlation_id))
        if self.confirmed:
            self.published += 1
            self.unconfirmed[self.published] = tag
        else:
            self.consume.basic_ack(tag)

    def _on_confirm(self, frame: Any) -> None:
        last = frame.method.delivery_tag
        for number in [n for n in self.unconfirmed if n <= last] if frame.method.multiple else [last]:
            self.consume.basic_ack(self.unconfirmed.pop(number))

    def run(self) -> None:
        ioloop = self.connection.ioloop
        signal.signal(signal.SIGTERM, lambda *_: ioloop.add_callback_threadsafe(ioloop.stop))
        ioloop.start()


def nova_read() -> Work:
    """The raw Nova request of a VM-details read of the body's VM, to an in-process fake cloud
    (the same request, session and fake as the raw side of ``bench.agent_ceiling``)."""
    import requests_mock
    from keystoneauth1.identity import v3

    from cloudmanagers_plugin.drivers.session import DriverSession
    from tests.support.fakecloud import NOVA as NOVA_URL, FakeCloud

    mocker = requests_mock.Mocker(real_http=True)
    mocker.start()
    cloud = FakeCloud(mocker)
    for n in range(8):
        cloud.add_server(f"vm-{n}")
    session = DriverSession(auth=v3.Password(
        auth_url="http://127.0.0.1:5000/v3", username="demo", password=cloud.password, project_name="demo",
        user_domain_id="default", project_domain_id="default"))

    def work(body: bytes) -> None:
        session.get(f"{NOVA_URL}/servers/detail", params={"name": f"^{json.loads(body)['attributes']['name']}$"})
    return work


def floor_process(mode: str) -> Process:
    """One of the echoes, in a process of its own (as the agent runs), serving a new queue."""
    return Process(mode, f"bench-{mode}-{uuid.uuid4().hex[:8]}", module="bench.round_trip_floor")


def main() -> int:
    client = Client()
    bodies = [read_request(f"vm-{n % 50}") for n in range(SERIAL)]
    latency: Dict[str, List[float]] = {name: [] for name in ("echo",) + MODES + ("agent",)}
    processes = [Process("echo", f"bench-echo-{uuid.uuid4().hex[:8]}")]
    try:
        processes += [floor_process(mode) for mode in MODES]
        processes.append(Process("agent", f"bench-agent-{uuid.uuid4().hex[:8]}", str(WORKERS), "0"))
        queues = dict(zip(latency, (process.queue for process in processes)))
        for queue in queues.values():
            client.run(queue, bodies, 1)  # warm-up
        for _ in range(ROUNDS):
            for name, queue in queues.items():
                latency[name].append(client.run(queue, bodies, 1) / SERIAL)
    finally:
        for process in processes:
            process.__exit__(None, None, None)
        client.close()
    print(f"round trip one at a time, bare pika echo (BlockingConnection): "
          f"{statistics.median(latency['echo']) * 1000:.3f} ms (median of {ROUNDS} rounds of {SERIAL})")
    for name in MODES + ("agent",):
        ratio = statistics.median(m / e for m, e in zip(latency[name], latency["echo"]))
        print(f"  {name:<10} {statistics.median(latency[name]) * 1000:.3f} ms, {ratio:.2f}x the bare echo")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in MODES + (NOVA_READ, NOVA_READ_UNCONFIRMED):
        nova = sys.argv[1] in (NOVA_READ, NOVA_READ_UNCONFIRMED)
        FloorEcho(sys.argv[2], sys.argv[1], nova_read() if nova else lambda _body: None).run()
        sys.exit(0)
    sys.exit(main())
