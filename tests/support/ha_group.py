"""A group of real agent processes sharing one uuid, and the broker's view of them.

The HA fault tests drive agents the way an operator's hosts would run them: one
``cloudmanagers agent`` process each (through ``tests.support.ha_agent``, which only adds the
test-only poison fault), each with its own synapse-agent.conf and its own metrics port. Which
agent is working is asked of the broker (its consumer list), not of the agents, so a test
kills the process the broker really delivers to.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from tests.support import ROOT
from tests.support.cluster import Node, rabbitcluster

CONSUMING = "consuming from queue"


def ctl(node: str, *args: str) -> List[List[str]]:
    """``rabbitmqctl -n NODE -q ARGS`` on the cluster; its table as rows of tab-separated cells."""
    result = rabbitcluster("ctl", "-n", node, "-q", *args, check=False)
    if result.returncode:
        raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)}: {result.stderr or result.stdout}")
    return [line.split("\t") for line in result.stdout.splitlines() if line.strip()]


def url(node: Node) -> str:
    return f"amqp://guest:guest@{node.address}/"


def client_pid(port: int) -> Optional[int]:
    """The local process holding the TCP connection whose client side is ``port``."""
    listing = subprocess.run(["ss", "-Htnp", "state", "established", f"sport = :{port}"],
                             capture_output=True, text=True).stdout
    found = re.search(r"pid=(\d+)", listing)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class Consumer:
    """One consumer of a queue as the broker sees it."""

    pid: int  # the local process that holds its connection
    active: bool  # the single active consumer (every consumer of a competing group is active)
    node: str  # the broker node its connection is on


def consumers(node: Node, queue: str) -> List[Consumer]:
    """The consumers of ``queue`` (asked on ``node``; the lists are cluster-wide)."""
    channels = {row[1]: row[2] == "true" for row in ctl(node.name, 
        "list_consumers", "--no-table-headers", "queue_name", "channel_pid", "active") if row[0] == queue}
    found = []
    for pid, name in ctl(node.name, "list_channels", "--no-table-headers", "pid", "name"):
        port = re.match(r"[^:]+:(\d+) ->", name)
        owner = client_pid(int(port.group(1))) if pid in channels and port else None
        if owner is not None:  # a channel pid reads <NODE.x.y.z>: the node the client is connected to
            found.append(Consumer(owner, channels[pid], pid[1:].split(".", 1)[0]))
    return found


def queue_leader(node: Node, queue: str) -> str:
    """The node that holds the quorum queue's leader."""
    rows = [row for row in ctl(node.name, "list_queues", "--no-table-headers", "name", "leader") if row[0] == queue]
    if not rows:
        raise RuntimeError(f"no queue {queue} on the cluster")
    return rows[0][1]


class AgentProcess:
    """One agent of the group: a slot that keeps its config and metrics port across restarts."""

    def __init__(self, slot: int, workdir: str, config: str, command: List[str], env: Dict[str, str],
                 metrics_port: int) -> None:
        self.slot = slot
        self.config = config  # its synapse-agent.conf
        self.workdir = workdir
        self.command = command
        self.env = env
        self.metrics_port = metrics_port
        self.incarnation = 0
        self.process: Optional[subprocess.Popen] = None
        self.log = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "AgentProcess":
        self.incarnation += 1
        self.log = os.path.join(self.workdir, f"agent-{self.slot}.{self.incarnation}.log")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        return self

    def consuming(self) -> bool:
        return CONSUMING in self.text()

    def wait_consuming(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.consuming():
            if not self.alive or time.monotonic() > deadline:
                raise RuntimeError(f"agent {self.slot} is not consuming; its log:\n{self.text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no clean-up, no reply, no ack; the broker requeues what it had."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def http(self, path: str) -> Tuple[int, str]:
        """GET ``path`` of the agent's metrics listener: (HTTP status, body); (0, why) when unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError as err:
            return 0, str(err)


class AgentGroup:
    """``size`` agents with one uuid on the same queue; kill -9, revive and a supervisor.

    ``supervise()`` plays systemd's ``Restart=``: a background thread restarts any agent that
    died, which is how a group survives a request that kills every agent taking it.
    """

    def __init__(self, workdir: str, cloud_config: str, agent_uuid: str, hosts: Iterable[str], size: int,
                 metrics_ports: List[int], options: Dict[str, Any], env: Optional[Dict[str, str]] = None) -> None:
        self.uuid = agent_uuid
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        environment = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
        self.agents: List[AgentProcess] = []
        for slot in range(size):
            config = os.path.join(workdir, f"synapse-agent-{slot}.conf")
            write_agent_config(config, agent_uuid, list(hosts), {
                "uuid_file": os.path.join(workdir, f"agent-{slot}.uuid"),
                "state_dir": os.path.join(workdir, f"state-{slot}"),
                "metrics_listen": f"127.0.0.1:{metrics_ports[slot]}", **options})
            command = [sys.executable, "-m", "tests.support.ha_agent", "--agent-config", config, "--config",
                       cloud_config]
            self.agents.append(AgentProcess(slot, workdir, config, command, environment, metrics_ports[slot]))
        self._supervisor: Optional[threading.Thread] = None
        self._supervising = threading.Event()
        self.restarts = 0

    def start(self, timeout: float = 60) -> "AgentGroup":
        for agent in self.agents:
            agent.start()
            agent.wait_consuming(timeout)  # one at a time: the first declares the queue
        return self

    def by_pid(self, pid: int) -> Optional[AgentProcess]:
        return next((agent for agent in self.agents if agent.alive and agent.pid == pid), None)

    def active(self, node: Node, timeout: float = 30) -> Tuple[AgentProcess, str]:
        """The agent the broker delivers to (with single-active consumers, the only one), and the
        broker node it is connected to."""
        deadline = time.monotonic() + timeout
        while True:
            working = [(self.by_pid(each.pid), each.node) for each in consumers(node, self.uuid) if each.active]
            working = [(agent, on) for agent, on in working if agent is not None]
            if working:
                return working[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no active consumer of {self.uuid} after {timeout} s")
            time.sleep(0.2)

    def kill(self, agent: AgentProcess) -> None:
        """kill -9 one agent, then start it again as a new process (it joins as a standby)."""
        agent.kill()
        if not self._supervising.is_set():  # else the supervisor restarts it
            agent.start()

    def supervise(self) -> None:
        """Restart any agent that dies, until ``stop``."""
        self._supervising.set()

        def watch() -> None:
            while self._supervising.is_set():
                for agent in self.agents:
                    if not agent.alive and self._supervising.is_set():
                        self.restarts += 1
                        agent.start()
                time.sleep(0.1)

        self._supervisor = threading.Thread(target=watch, name="agent-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        self._supervising.clear()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for agent in self.agents:
            agent.stop()


def write_agent_config(path: str, agent_uuid: str, hosts: List[str], options: Dict[str, Any]) -> None:
    """synapse-agent.conf for one agent of the group: no fanout exchange (only direct requests),
    replies to the address each request names, fast reconnects, no change events (the runs
    judge requests; three agents polling the shared cloud would only slow it down)."""
    text = (f"[rabbitmq]\nhost = {','.join(hosts)}\nuuid = {agent_uuid}\nexchange =\npublish_exchange =\n"
            "retry_delay = 1\nheartbeat = 5\n\n[events]\nenabled = false\n\n[agent]\n")
    text += "".join(f"{key} = {value}\n" for key, value in options.items())
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
