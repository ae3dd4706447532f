"""What the end-to-end tests share: the harness that drives the real pieces, and Nova's own view.

``tools/harness.py`` is shared with the demo; the helpers here read a server straight from Nova
(independently of the plugin) so a test can check what the plugin said against what happened.
"""

import json
import os
import threading
import time

import pika
from novaclient import exceptions as nova_exc

from cloudmanagers_plugin.agent.notifications import ROUTING_KEY, parse_notification
from tools import harness

__all__ = ["NovaTap", "harness", "real_status", "settle"]


def wait_for_first_full_list(agent, sections, timeout=60):
    """Until the agent's first full list of each section recorded what exists (its state file is
    written then): VMs that exist before it are recorded, not reported as created, and a
    notification before it is not acted on, so a test's VM must come after."""
    deadline = time.monotonic() + timeout
    for section in sections:
        while not os.path.exists(os.path.join(agent.workdir, f"events-{section}.json")):
            assert time.monotonic() < deadline, f"no first full list of '{section}':\n{agent.tail()}"
            time.sleep(0.2)


def wait_for_first_delta_list(agent, section, timeout=60):
    """Until the agent's first changes-since list of ``section`` after its first full list recorded the
    DELETED records it showed (its state file then names the deleted VMs): a VM that comes and goes
    before it is recorded, not reported, so a test's VM must come after."""
    path = os.path.join(agent.workdir, f"events-{section}.json")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                if "deleted" in json.load(handle):
                    return
        except (OSError, ValueError):
            pass  # not written yet
        assert time.monotonic() < deadline, f"no first changes-since list of '{section}':\n{agent.tail()}"
        time.sleep(0.2)


def real_status(nova, server_id):
    """(status, task_state, flavor name) of a server as Nova itself reports it; DELETED when gone."""
    try:
        server = nova.servers.get(server_id)
    except nova_exc.NotFound:
        return "DELETED", None, None
    return server.status, getattr(server, "OS-EXT-STS:task_state"), server.flavor["original_name"]


def settle(nova, server_id, expect=None, timeout=90):
    """Wait until Nova has no task under way on the server (and, given ``expect``, shows that status).

    Returns (status, flavor name). ``expect`` matters where Nova works without a task state,
    e.g. a confirmed resize stays VERIFY_RESIZE for a moment with no task.
    """
    deadline = time.monotonic() + timeout
    while True:
        status, task, flavor = real_status(nova, server_id)
        if not task and status not in ("BUILD", "RESIZE", "REBOOT", "HARD_REBOOT") and expect in (None, status):
            return status, flavor
        assert time.monotonic() < deadline, f"server {server_id} still {status}/{task}"
        time.sleep(0.3)


class NovaTap:
    """A queue of the test's own on Nova's notification exchange, read on a thread of its own: when
    each VM's action ended, as Nova itself announces it (``instance.<action>.end``). The moment a
    change happened, to time what the agent adds after it, whatever Nova's own pace."""

    def __init__(self, url: str, exchange: str) -> None:
        self._connection = pika.BlockingConnection(pika.URLParameters(url.replace("rabbit://", "amqp://", 1)))
        channel = self._connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, exchange, ROUTING_KEY)
        channel.basic_consume(queue, self._on_message, auto_ack=True)
        self._ended = {}  # (VM, action such as "power_off") -> [time.monotonic() at each arrival]
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nova-tap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._connection.process_data_events(time_limit=0.05)
        self._connection.close()

    def _on_message(self, _channel, _method, _properties, body: bytes) -> None:
        hint = parse_notification(body)
        if hint and hint[0].endswith(".end"):
            with self._arrived:
                self._ended.setdefault((hint[1], hint[0][len("instance."):-len(".end")]), []).append(time.monotonic())
                self._arrived.notify_all()

    def ended(self, vm_id: str, action: str, after: float = 0.0, timeout: float = 0.0):
        """When Nova announced the end of ``action`` on the VM, at or after ``after`` (None if not
        within ``timeout``)."""
        def first():
            return next((at for at in self._ended.get((vm_id, action), []) if at >= after), None)

        with self._arrived:
            self._arrived.wait_for(lambda: first() is not None, timeout)
            return first()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
