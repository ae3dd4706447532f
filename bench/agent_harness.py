"""Shared parts of the agent benches: the processes under test and a blocking RPC client.

Run as a module (from the repository root) it becomes one of the processes under test, until SIGTERM:
    python -m bench.agent_harness agent UUID WORKERS LATENCY   the real agent and controller, with an
                                                               in-process driver that sleeps LATENCY s
    python -m bench.agent_harness echo QUEUE                   a bare pika RPC echo server (the baseline)
    python -m bench.agent_harness cloud UUID WORKERS           the real agent, controller and OpenStack
                                                               driver against an in-process HTTP fake
                                                               (zero latency) holding vm-0 ... vm-7
    python -m bench.agent_harness http UUID WORKERS PORT HOSTS QUEUE_TYPE CONSUMERS
                                                               the same against bench/http_cloud.py on
                                                               PORT, as one agent of a group
The agent mode serves the local broker, or the group named by three more words: HOSTS
([rabbitmq] host), QUEUE_TYPE and CONSUMERS ([agent] queue_type and consumers).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from typing import Any, Dict, List, Mapping, Optional

import pika

from cloudmanagers_plugin.drivers.base import CloudDriver, Console, Flavor, Image, Server
from cloudmanagers_plugin.states import ServerAction
from tests.support import ROOT
from tests.support.agent import wait_for_consumer

BROKER = pika.ConnectionParameters("127.0.0.1")


class LatencyDriver(CloudDriver):
    """Stands in for OpenStack: every VM lookup takes ``LATENCY`` seconds, nothing else exists."""

    latency = 0.0

    def authenticate(self) -> None:
        """Nothing to authenticate against."""

    def servers_named(self, name: str) -> List[Server]:
        if self.latency:  # even sleep(0) costs a system call and a GIL round trip
            time.sleep(self.latency)
        return [Server(id=f"id-{name}", name=name, status="ACTIVE", flavor_name="m1.small", vcpus=1)]

    def get_server(self, server_id: str) -> Server:
        return Server(id=server_id, name=server_id[3:], status="ACTIVE")

    def list_server_names(self) -> List[str]:
        return []

    def list_servers(self, changes_since: Optional[str] = None) -> List[Server]:
        return []

    def compute_max_version(self) -> str:
        return "2.96"

    def find_flavor(self, name_or_id: str) -> Flavor:
        return Flavor(id="1", name=name_or_id, vcpus=1, ram=512, disk=1)

    def flavor_id(self, flavor_name: Optional[str]) -> Optional[str]:
        return "1"

    def find_image(self, name_or_id: str) -> str:
        return name_or_id

    def list_images(self) -> List[Dict]:
        return []

    list_flavors = list_keys = list_networks = list_security_groups = list_images

    def list_zones(self) -> List[str]:
        return []

    def limits(self) -> Dict[str, Dict[str, Optional[int]]]:
        return {}

    def create_server(self, name, flavor, image_id, key_name, user_data) -> Server:
        return Server(id=f"id-{name}", name=name, status="BUILD")

    def set_state(self, server_id: str, action: ServerAction) -> None:
        """Every state change succeeds at once."""

    def resize(self, server_id: str, flavor: Flavor) -> None:
        """Every resize succeeds at once."""

    def delete(self, server_id: str) -> None:
        """Every delete succeeds at once."""

    def console(self, server: Server) -> Console:
        return Console(reason="no console in the bench")

    known_console = console

    def console_log(self, server_id: str, lines: int) -> str:
        return ""

    def set_metadata(self, server_id: str, metadata: Mapping[str, str]) -> None:
        """Every day-2 action succeeds at once."""

    def delete_metadata(self, server_id: str, keys: List[str]) -> None:
        """Every day-2 action succeeds at once."""

    def set_tags(self, server_id: str, tags: List[str]) -> None:
        """Every day-2 action succeeds at once."""

    def rename(self, server_id: str, name: str) -> None:
        """Every day-2 action succeeds at once."""

    def snapshot(self, server_id: str, image_name: str, properties: Optional[Mapping[str, str]] = None) -> str:
        return f"image-of-{server_id}"

    def images_with(self, key: str, value: str) -> List[Image]:
        return []

    def delete_image(self, image_id: str) -> None:
        """Every day-2 action succeeds at once."""

    def image_status(self, image_id: str) -> str:
        return "active"


def bench_settings(agent_uuid: str, workers: int, group: List[str]) -> Any:
    """Agent settings for the local broker, or for ``group``: [hosts, queue_type, consumers]."""
    from cloudmanagers_plugin.agent.settings import AgentSettings

    settings = AgentSettings(uuid=agent_uuid, workers=workers, exchange="", publish_exchange="", metrics_listen="")
    settings.broker.host = "127.0.0.1"
    if group:
        settings.broker.host, settings.queue_type, settings.consumers = group
    return settings


def serve_agent(agent_uuid: str, workers: int, latency: float, group: List[str]) -> int:
    from cloudmanagers_plugin.agent.service import AgentService
    from cloudmanagers_plugin.controller import CloudmanagersController
    from cloudmanagers_plugin.drivers import register_driver

    LatencyDriver.latency = latency
    register_driver("bench", LatencyDriver)
    conf = os.path.join(tempfile.mkdtemp(prefix="agent-bench-"), "cloudmanagers.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write("[cm_bench]\ncm_type = bench\nkeystone_base_url = http://127.0.0.1:5000/v3\n"
                     "username = u\npassword = p\nproject_name = p\n")
    os.chmod(conf, 0o600)
    settings = bench_settings(agent_uuid, workers, group)
    controller = CloudmanagersController(config_path=conf, agent_uuid=agent_uuid)
    return AgentService(settings, controller).run_until_signalled()


def serve_cloud_agent(agent_uuid: str, workers: int) -> int:
    """The agent as it runs, with Keystone and Nova answered in-process (requests-mock)."""
    import requests_mock

    from cloudmanagers_plugin.agent.service import AgentService
    from cloudmanagers_plugin.controller import CloudmanagersController
    from tests.support.controller import LEGACY_SECTION, write_config
    from tests.support.fakecloud import FakeCloud

    conf = write_config(pathlib.Path(tempfile.mkdtemp(prefix="agent-bench-")) / "cloudmanagers.conf", LEGACY_SECTION)
    settings = bench_settings(agent_uuid, workers, [])
    with requests_mock.Mocker(real_http=True) as mocker:  # real_http: the broker is not HTTP anyway
        cloud = FakeCloud(mocker)
        for n in range(8):
            cloud.add_server(f"vm-{n}")
        controller = CloudmanagersController(config_path=conf, agent_uuid=agent_uuid)
        return AgentService(settings, controller).run_until_signalled()


def serve_http_agent(agent_uuid: str, workers: int, port: int, group: List[str]) -> int:
    """The agent as it runs, against the HTTP fake OpenStack of bench/http_cloud.py on ``port``."""
    from bench.http_cloud import config_section
    from cloudmanagers_plugin.agent.service import AgentService
    from cloudmanagers_plugin.controller import CloudmanagersController
    from tests.support.controller import write_config

    conf = write_config(pathlib.Path(tempfile.mkdtemp(prefix="agent-bench-")) / "cloudmanagers.conf",
                        config_section(port))
    controller = CloudmanagersController(config_path=conf, agent_uuid=agent_uuid)
    return AgentService(bench_settings(agent_uuid, workers, group), controller).run_until_signalled()


def serve_echo(queue: str) -> int:
    """The baseline: consume, publish the body back to reply_to, ack. Nothing else."""
    connection = pika.BlockingConnection(BROKER)
    channel = connection.channel()
    channel.queue_declare(queue, auto_delete=True)

    def echo(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ch.basic_publish("", properties.reply_to, body, pika.BasicProperties(correlation_id=properties.correlation_id))
        ch.basic_ack(method.delivery_tag)

    channel.basic_qos(prefetch_count=8)
    channel.basic_consume(queue, echo)
    signal.signal(signal.SIGTERM, lambda *_: channel.stop_consuming())
    channel.start_consuming()
    connection.close()
    return 0


class Process:
    """One process under test (``python -m module *args``, its queue the second argument); stopped
    (SIGTERM, then kill) when leaving the ``with``."""

    def __init__(self, *args: str, broker: pika.ConnectionParameters = BROKER, consumers: int = 1,
                 module: str = "bench.agent_harness") -> None:
        self.queue = args[1]
        self.broker = broker
        self.popen = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_consumer(self.queue, timeout=20.0, broker=broker, count=consumers)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        with pika.BlockingConnection(self.broker) as connection:
            connection.channel().queue_delete(self.queue)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (every thread), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_request(vm: str) -> bytes:
    """A typical request: read one VM of the bench cloud manager."""
    return json.dumps({"collection": "cloudmanagers", "action": "read", "id": "cm_bench",
                       "attributes": {"name": vm}, "filters": {}}).encode()


class Client:
    """Blocking RPC client: publish to a queue, wait for replies by correlation id."""

    def __init__(self, broker: pika.ConnectionParameters = BROKER) -> None:
        self.connection = pika.BlockingConnection(broker)
        self.channel = self.connection.channel()
        self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.answered: Dict[str, bytes] = {}
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)

    def _on_reply(self, _ch: Any, _method: Any, properties: Any, body: bytes) -> None:
        self.answered[properties.correlation_id] = body

    def send(self, queue: str, body: bytes) -> str:
        correlation_id = str(uuidlib.uuid4())
        properties = pika.BasicProperties(correlation_id=correlation_id, reply_to=self.reply_queue,
                                          headers={"reply_exchange": ""})
        self.channel.basic_publish("", queue, body, properties)
        return correlation_id

    def wait(self, correlation_ids: List[str], timeout: float = 60.0) -> None:
        """Block until every id is answered; SystemExit after ``timeout`` (benches must end)."""
        deadline = time.monotonic() + timeout
        while not all(cid in self.answered for cid in correlation_ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"replies missing after {timeout} s")
            self.connection.process_data_events(time_limit=0.01)

    def run(self, queue: str, bodies: List[bytes], window: int) -> float:
        """Send ``bodies`` keeping at most ``window`` unanswered; return the elapsed seconds.

        SystemExit if any reply is an error: a bench that times error replies measures nothing.
        """
        started = time.perf_counter()
        pending: List[str] = []
        for body in bodies:
            pending.append(self.send(queue, body))
            if len(pending) >= window:
                self.wait(pending[:1])
                pending = [cid for cid in pending if cid not in self.answered]
        self.wait(pending)
        elapsed = time.perf_counter() - started
        failed = [body for body in self.answered.values() if b'"error"' in body]
        if failed:
            raise SystemExit(f"{len(failed)} error replies, e.g. {failed[0][:300]!r}")
        return elapsed

    def close(self) -> None:
        self.connection.close()


def main(argv: List[str]) -> int:
    if argv[:1] == ["agent"] and len(argv) in (4, 7):
        return serve_agent(argv[1], int(argv[2]), float(argv[3]), argv[4:])
    if argv[:1] == ["cloud"] and len(argv) == 3:
        return serve_cloud_agent(argv[1], int(argv[2]))
    if argv[:1] == ["http"] and len(argv) == 7:
        return serve_http_agent(argv[1], int(argv[2]), int(argv[3]), argv[4:])
    if argv[:1] == ["echo"] and len(argv) == 2:
        return serve_echo(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
