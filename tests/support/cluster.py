"""The 3-node RabbitMQ cluster of tools/rabbitcluster and agent processes on it, for the HA
tests and benches: nodes to kill and revive, agents to kill -9, requesters on a chosen node."""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional

import pika

from tests.support import ROOT
from tests.support.agent import wait_for_consumer

TOOL = os.path.join(ROOT, "tools", "rabbitcluster")


@dataclass
class Node:
    name: str
    port: int
    up: bool

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def parameters(self) -> pika.ConnectionParameters:
        return pika.ConnectionParameters("127.0.0.1", self.port, connection_attempts=3, retry_delay=0.5)


def rabbitcluster(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, check=check, timeout=300)


class Cluster:
    """The nodes as ``tools/rabbitcluster status`` prints them (same environment, same layout)."""

    def nodes(self) -> List[Node]:
        lines = rabbitcluster("status", check=False).stdout.split("\n")
        found = []
        for line in filter(None, lines):
            name, url, state = line.split()
            found.append(Node(name, int(url.rstrip("/").rsplit(":", 1)[1]), state == "up"))
        return found

    @property
    def hosts(self) -> str:
        """``[rabbitmq] host`` naming every node, in order."""
        return ",".join(node.address for node in self.nodes())

    def all_up(self) -> bool:
        nodes = self.nodes()
        return len(nodes) == 3 and all(node.up for node in nodes)

    def start(self) -> None:
        rabbitcluster("start")

    def stop(self) -> None:
        rabbitcluster("stop")

    def kill(self, node: Node) -> None:
        rabbitcluster("kill", node.name)

    def revive(self, node: Node) -> None:
        rabbitcluster("revive", node.name)

    def revive_all(self) -> None:
        for node in self.nodes():
            if not node.up:
                self.revive(node)

    def ctl(self, *args: str) -> str:
        return rabbitcluster("ctl", *args).stdout

    def delete_queue(self, name: str) -> None:
        for node in self.nodes():
            if node.up:
                with pika.BlockingConnection(node.parameters()) as connection:
                    connection.channel().queue_delete(name)
                return

    def wait_for_consumers(self, queue: str, count: int, timeout: float = 20.0) -> None:
        """Until ``queue`` exists and has ``count`` consumers (competing ones: a queue with a single
        active consumer counts only the active one)."""
        node = next(node for node in self.nodes() if node.up)
        wait_for_consumer(queue, timeout, node.parameters(), count)


class AgentProcess:
    """``python -m tests.support.agent_process`` on the cluster; its output is kept in ``lines``."""

    def __init__(self, uuid: str, hosts: str, *options: str) -> None:
        self.uuid = uuid
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.agent_process", uuid, "--hosts", hosts, *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def role(self) -> Optional[str]:
        roles = [line.split()[1] for line in self.lines if line.startswith("ROLE ")]
        return roles[-1] if roles else None

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"agent {self.pid} never logged '{text}':\n" + "\n".join(self.lines[-30:]))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self) -> None:
        """SIGCONT (if frozen) then SIGKILL: the test is over, nothing to drain."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)
        self._reader.join(5)
