"""What the demo and the end-to-end tests share: the devcloud, an agent, `cloudmanagers call`.

Everything here drives the real pieces the way an operator would (the devcloud tool, the
`cloudmanagers` command in a subprocess), so the demo transcript and the e2e assertions see
exactly what a user sees.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
DEVCLOUD = os.path.join(TOOLS, "devcloud")


def devcloud(*args: str, quiet: bool = False) -> None:
    """Run a devcloud command; its progress lines stream through unless quiet.

    ``start`` also makes sure RabbitMQ and MariaDB run (reused, else started, else installed).
    """
    result = subprocess.run([sys.executable, DEVCLOUD, *args], text=True,
                            stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    if result.returncode:
        raise RuntimeError(f"tools/devcloud {' '.join(args)} failed (exit {result.returncode})"
                           + (f":\n{result.stdout[-3000:]}" if quiet else ""))


def devcloud_facts() -> Dict[str, Any]:
    """The devcloud's devcloud.json (credentials, ids, the cloudmanagers.conf it wrote)."""
    base = os.environ.get("DEVCLOUD_BASE", os.path.expanduser("~/.cache/cloudmanagers-devcloud"))
    with open(os.path.join(base, "devcloud.json"), encoding="utf-8") as handle:
        return json.load(handle)


def cloudmanagers(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `cloudmanagers` command of this checkout."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "cloudmanagers_plugin.cli", *args], text=True,
                          capture_output=True, timeout=timeout, env=env)


class Agent:
    """A standalone `cloudmanagers agent` in a subprocess, with its own queue (uuid)."""

    def __init__(self, workdir: str, config: str, agent_uuid: Optional[str] = None,
                 events: Optional[Dict[str, Any]] = None, hosts: str = "127.0.0.1", **agent_options: Any):
        """``agent_options``: keys of ``[agent]``; ``events``: keys of ``[events]`` (default: no change
        events, so that the agents of tests about other things do not poll the shared cloud);
        ``hosts``: ``[rabbitmq] host``, the broker's nodes (``call`` then reads them from the same file)."""
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.uuid = agent_uuid or str(uuid.uuid4())
        self.config = config
        self.agent_config = os.path.join(workdir, "synapse-agent.conf")
        self.log = os.path.join(workdir, "agent.log")
        # No metrics listener unless asked: several agents run side by side on one host.
        options = {"uuid_file": os.path.join(workdir, "agent.uuid"), "state_dir": workdir, "metrics_listen": "",
                   **agent_options}
        with open(self.agent_config, "w", encoding="utf-8") as handle:
            handle.write(f"[rabbitmq]\nhost = {hosts}\nuuid = {self.uuid}\n\n[agent]\n")
            handle.writelines(f"{key} = {value}\n" for key, value in options.items())
            handle.write("\n[events]\n")
            handle.writelines(f"{key} = {value}\n" for key, value in (events or {"enabled": "false"}).items())
        self.hosts = hosts
        self.process: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30) -> "Agent":
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cloudmanagers_plugin.cli", "agent", "--agent-config", self.agent_config,
                 "--config", self.config], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while cloudmanagers(*self.command("ping", timeout=2)).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not answer ping; its log:\n{self.tail()}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def metrics_url(self, path: str = "/metrics") -> str:
        """The URL of ``path`` on this agent's metrics listener, from its latest start-up line."""
        found = re.findall(r"metrics on (http://\S+?)/metrics", self.tail(10**6))
        if not found:
            raise RuntimeError(f"the agent serves no metrics (metrics_listen is empty?); its log:\n{self.tail()}")
        return found[-1] + path

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def command(self, action: str, cm_id: str = "", timeout: Optional[float] = None, **attributes: Any) -> List[str]:
        """The `cloudmanagers call` command line for one request to this agent.

        The default timeout outlasts the request's own ``wait``; a ping collects answers for 2 s.
        """
        if timeout is None:
            timeout = 2 if action == "ping" else 60 + float(attributes.get("wait", 0))
        args = ["call", action] + ([cm_id] if cm_id else []) + ["--target", self.uuid, "--timeout", str(timeout)]
        if self.hosts != "127.0.0.1":
            args += ["--agent-config", self.agent_config]
        for key, value in attributes.items():
            args += ["--attr", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        return args

    def call(self, action: str, cm_id: str = "", timeout: Optional[float] = None, **attributes: Any) -> Any:
        """Send one request with `cloudmanagers call --json` and return the agent's reply."""
        result = cloudmanagers(*self.command(action, cm_id, timeout, **attributes), "--json")
        try:
            return json.loads(result.stdout)
        except ValueError:
            return {"error": f"no JSON reply (exit {result.returncode}): {result.stdout[-500:]} {result.stderr[-1500:]}"}

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
