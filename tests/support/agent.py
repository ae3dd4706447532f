"""Test doubles and broker helpers shared by the agent tests, the agent subprocess and the benches."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid as uuidlib
from collections import Counter, defaultdict
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pika

from cloudmanagers_plugin.agent.service import AgentService
from cloudmanagers_plugin.agent.settings import AgentSettings
from cloudmanagers_plugin.protocol import make_response


class FakeController:
    """The controller contract, counting executions.

    Each request may carry ``attributes.sleep`` (seconds), ``attributes.n`` (an execution
    label) and ``attributes.hold`` (it waits until the test calls ``release(hold)``);
    ``executions`` counts labels, ``order`` lists (vm, n) in start order per VM. In an agent
    process, ``attributes.whoami`` adds its pid to the reply (which agent of a group answered)
    and ``attributes.die`` kills it with SIGKILL (a request that kills every agent taking it).
    """

    __resource__ = "cloudmanagers"

    def __init__(self, latency: float = 0.0, agent_uuid: str = "fake") -> None:
        self.latency = latency
        self.agent_uuid = agent_uuid
        self.executions: Counter = Counter()
        self.order: Dict[str, List[Any]] = defaultdict(list)
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()
        self._holds: Dict[str, threading.Event] = defaultdict(threading.Event)

    def release(self, hold: str) -> None:
        """Let the requests held under ``hold`` finish (and those sent with it later)."""
        with self._lock:
            event = self._holds[hold]
        event.set()

    def process(self, message: Dict[str, Any]) -> Dict[str, Any]:
        attributes = message.get("attributes") or {}
        if attributes.get("die"):
            os.kill(os.getpid(), signal.SIGKILL)
        with self._lock:
            self.executions[attributes.get("n")] += 1
            self.order[attributes.get("name")].append(attributes.get("n"))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            held = self._holds[attributes["hold"]] if attributes.get("hold") else None
        if held is not None:
            held.wait(60)
        time.sleep(attributes.get("sleep", self.latency))
        with self._lock:
            self.running -= 1
        status = {"action": message["action"], "n": attributes.get("n")}
        if attributes.get("whoami"):
            status["pid"] = os.getpid()
        return make_response(self.agent_uuid, message.get("id"), self.__resource__, status=status)

    def close(self) -> None:
        """Nothing to release."""


def agent_lines(caplog: Any) -> List[Any]:
    """The log records of the agent's own logger (not pika's, not the controller's)."""
    return [record for record in caplog.records if record.name == "cloudmanagers_plugin.agent"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:10]}"


@contextlib.contextmanager
def temporary_exchange(prefix: str, kind: str = "fanout") -> Iterator[str]:
    """An exchange of the test's own on the local broker (a unique name), deleted afterwards."""
    name = unique(prefix)
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().exchange_declare(name, kind)
    try:
        yield name
    finally:
        with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
            connection.channel().exchange_delete(name)


def agent_settings(**overrides: Any) -> AgentSettings:
    """Settings for a test agent on the local broker: unique uuid, fast reconnect."""
    settings = AgentSettings()
    settings.uuid = unique("agent-test")
    settings.broker.host = "127.0.0.1"
    settings.broker.retry_delay = 0.5
    settings.publish_exchange = ""
    settings.metrics_listen = ""  # test agents run side by side: a test that wants metrics asks for a port
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


class AgentThread:
    """An AgentService running in a thread; ``stop()`` drains it and removes its queue."""

    def __init__(self, settings: AgentSettings, controller: Any,
                 broker: Optional[pika.ConnectionParameters] = None) -> None:
        self.settings = settings
        self.controller = controller
        self.service = AgentService(settings, controller)
        self.thread = threading.Thread(target=self._run, name="agent", daemon=True)
        self.exit_code: Optional[int] = None
        self.thread.start()
        wait_for_consumer(settings.uuid, broker=broker)

    def _run(self) -> None:
        self.exit_code = self.service.run()

    def stop(self, timeout: float = 20.0) -> None:
        self.service.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "agent did not stop"


def wait_for_consumer(queue: str, timeout: float = 10.0, broker: Optional[pika.ConnectionParameters] = None,
                      count: int = 1) -> None:
    """Block until ``queue`` exists and has ``count`` consumers (on ``broker``, else the local one)."""
    deadline = time.monotonic() + timeout
    with pika.BlockingConnection(broker or pika.ConnectionParameters("127.0.0.1")) as connection:
        while time.monotonic() < deadline:
            channel = connection.channel()
            try:
                if channel.queue_declare(queue, passive=True).method.consumer_count >= count:
                    channel.close()
                    return
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} consumers on {queue} after {timeout} s")


class Requester:
    """Publishes raw requests and collects replies on a private queue."""

    def __init__(self, broker: Optional[pika.ConnectionParameters] = None) -> None:
        self.connection = pika.BlockingConnection(broker or pika.ConnectionParameters("127.0.0.1"))
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.received: List[Tuple[Any, Any, bytes]] = []
        self.channel.basic_consume(self.queue, self._on_reply, auto_ack=True)

    def _on_reply(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.received.append((method, properties, body))

    def send(
        self, message: Any, routing_key: str, exchange: str = "", correlation_id: Optional[str] = None,
        reply: bool = True, headers: Any = "default", reply_to: Optional[str] = None, user_id: str = "guest",
        timestamp: Optional[int] = None,
    ) -> str:
        """Publish ``message`` (dict: JSON-encoded; bytes: as is); return its correlation id.

        ``timestamp`` is the AMQP timestamp property (seconds since the epoch).
        """
        correlation_id = correlation_id or str(uuidlib.uuid4())
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        properties = pika.BasicProperties(
            correlation_id=correlation_id,
            reply_to=reply_to or (self.queue if reply else None),
            headers={"reply_exchange": ""} if headers == "default" else headers,
            user_id=user_id,
            timestamp=timestamp,
        )
        self.channel.basic_publish(exchange, routing_key, body, properties)
        return correlation_id

    def collect(self, count: int, timeout: float = 10.0) -> List[Tuple[Any, Any, bytes]]:
        """Wait until ``count`` replies arrived (or ``timeout``); return every reply so far."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=0.05)
        return list(self.received)

    def replies(self, count: int, timeout: float = 10.0) -> Dict[str, Dict[str, Any]]:
        """Wait for replies to ``count`` distinct correlation ids: {correlation id: reply body}."""
        deadline = time.monotonic() + timeout
        while True:
            found = {props.correlation_id: json.loads(body) for _m, props, body in self.received}
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            self.connection.process_data_events(time_limit=0.05)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def request(action: str = "read", cm: str = "cm1", **attributes: Any) -> Dict[str, Any]:
    return {"collection": "cloudmanagers", "action": action, "id": cm, "attributes": attributes}


def delete_queue(name: str) -> None:
    with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")) as connection:
        connection.channel().queue_delete(name)


def connections_named(name: str) -> List[str]:
    """The broker's pids of the connections whose ``connection_name`` is ``name``."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "client_properties"],
        capture_output=True, text=True, check=True,
    ).stdout
    return [line.split("\t", 1)[0] for line in listing.splitlines() if f'{{"connection_name","{name}"}}' in line]


def close_connection_named(name: str) -> int:
    """Close (broker side) the connections whose ``connection_name`` is ``name``; return how many.

    Only the named connections: the shared broker also carries other services' connections.
    """
    pids = connections_named(name)
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test"], check=True, capture_output=True)
    return len(pids)


class EventListener:
    """An exclusive queue bound to an events exchange, collecting the decoded messages."""

    def __init__(self, exchange: str, routing_key: str = "") -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, exchange, routing_key)
        self.messages: List[Tuple[Any, Dict[str, Any]]] = []  # (properties, body)
        self.arrivals: List[float] = []  # time.monotonic() when each message was taken in
        self.channel.basic_consume(self.queue, self._on_message, auto_ack=True)

    def _on_message(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        self.messages.append((properties, json.loads(body)))
        self.arrivals.append(time.monotonic())

    def listen(self, seconds: float) -> None:
        """Take messages in for ``seconds`` (instead of sleeping), so each is timed as it arrives."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.connection.process_data_events(time_limit=min(left, 0.05))

    def first(self, matches: Any, timeout: float = 20.0, after: float = 0.0) -> Tuple[float, Dict[str, Any]]:
        """The first message taken in at or after ``after`` (monotonic) that ``matches``: (its arrival, its
        body); AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = next(((at, body) for at, (_p, body) in zip(self.arrivals, self.messages)
                          if at >= after and matches(body)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                seen = [f"{b.get('msg_type')}:{b.get('status', {}).get('vm_status')}" for b in self.matching(
                    lambda _b: True, after)]
                raise AssertionError(f"no matching message within {timeout:g} s; since then: {seen[-20:]}")
            self.connection.process_data_events(time_limit=0.05)

    def matching(self, matches: Any, after: float = 0.0) -> List[Dict[str, Any]]:
        """The bodies taken in at or after ``after`` that ``matches``."""
        return [body for at, (_p, body) in zip(self.arrivals, self.messages) if at >= after and matches(body)]

    def wait(self, condition: Any, timeout: float = 20.0) -> List[Dict[str, Any]]:
        """Collect until ``condition(bodies)`` holds (AssertionError after ``timeout``); return the bodies."""
        deadline = time.monotonic() + timeout
        while not condition(self.bodies()):
            if time.monotonic() > deadline:
                raise AssertionError(f"events so far: {[body.get('status', {}).get('vm_event') for body in self.bodies()]}")
            self.connection.process_data_events(time_limit=0.05)
        return self.bodies()

    def bodies(self) -> List[Dict[str, Any]]:
        return [body for _properties, body in self.messages]

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def about(agent_uuid: str, section: str, vm_id: str, msg_type: str = "status", **status: Any) -> Any:
    """A predicate on unsolicited messages: from that agent, about that section's VM, of that
    ``msg_type``, whose ``status`` holds those values."""
    def matches(body: Dict[str, Any]) -> bool:
        values = body.get("status") or {}
        return (body.get("uuid") == agent_uuid and body.get("resource_id") == section
                and body.get("msg_type") == msg_type and (body.get("vm_id") or values.get("vm_id")) == vm_id
                and all(values.get(key) == value for key, value in status.items()))
    return matches
