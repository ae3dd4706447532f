"""The devcloud's daemons: how each is launched and how its health is judged.

API services run under gunicorn (1 worker, threads) from the entry modules in
``<base>/lib/wsgi``; the Nova back-end services run as their console scripts
with native threads. Every one is a process group of its own with a pid file
in ``<base>/run`` and a log in ``<base>/logs``.
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import procs
from .settings import HOST, Settings
from .util import http_answers, port_open

# gunicorn's default (4094 bytes) is below what Nova sends Neutron: listing servers, it asks for the
# ports of up to 150 of them in one URL (~7 KB); deployments run Neutron with larger buffers.
REQUEST_LINE_LIMIT = 8190


@dataclass
class Service:
    """One daemon of the devcloud."""

    name: str
    port_key: Optional[str] = None     # API services: settings port key
    module: Optional[str] = None       # gunicorn "module:callable"
    threads: int = 4
    config_env: Optional[Tuple[str, str]] = None  # (variable, etc sub-folder) for the WSGI app
    console_script: Optional[str] = None
    # files (relative to <base>) whose content is what the process runs: when one changes, a
    # warm `start` restarts the service
    code: Tuple[str, ...] = ()

    @property
    def is_api(self) -> bool:
        return self.module is not None

    def pidfile(self, settings: Settings) -> str:
        return os.path.join(settings.run, self.name + ".pid")

    def logfile(self, settings: Settings) -> str:
        return os.path.join(settings.logs, self.name + ".log")

    def argv(self, settings: Settings) -> List[str]:
        if self.is_api:
            return [settings.venv_bin("gunicorn"), "--no-control-socket",
                    "--chdir", os.path.join(settings.lib, "wsgi"), "--name", "devcloud-" + self.name,
                    "--workers", "1", "--threads", str(self.threads), "--timeout", "300",
                    "--graceful-timeout", "5", "--limit-request-line", str(REQUEST_LINE_LIMIT),
                    "--bind", f"{HOST}:{settings.ports[self.port_key]}",
                    self.module]
        return [settings.venv_bin(self.console_script), "--config-file",
                os.path.join(settings.etc, "nova", "nova.conf")]

    def env(self, settings: Settings) -> Dict[str, str]:
        """The daemon's environment: the devcloud's venv first, nothing of a caller's virtualenv."""
        env = dict(os.environ)
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                    "PATH": os.path.join(settings.venv, "bin") + os.pathsep + env.get("PATH", "")})
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        if self.config_env:
            variable, folder = self.config_env
            env[variable] = os.path.join(settings.etc, folder)
        return env

    def start(self, settings: Settings) -> int:
        return procs.spawn(self.argv(settings), self.pidfile(settings), self.logfile(settings),
                           env=self.env(settings), cwd=settings.run)

    def _code_file(self, settings: Settings) -> str:
        return os.path.join(settings.run, self.name + ".code")

    def code_stamp(self, settings: Settings) -> str:
        digest = hashlib.sha256()
        for relative in self.code:
            with open(os.path.join(settings.base, relative), "rb") as handle:
                digest.update(handle.read())
        return digest.hexdigest()

    def record_code(self, settings: Settings) -> None:
        if self.code:
            with open(self._code_file(settings), "w") as handle:
                handle.write(self.code_stamp(settings) + "\n")

    def code_changed(self, settings: Settings) -> bool:
        """True when the running process was started from other code than what is on disk now."""
        if not self.code:
            return False
        try:
            with open(self._code_file(settings)) as handle:
                return handle.read().strip() != self.code_stamp(settings)
        except OSError:
            return True  # started before stamps were kept

    def running(self, settings: Settings) -> bool:
        return procs.pid_alive(self.pidfile(settings))

    def port_in_use(self, settings: Settings) -> bool:
        return self.is_api and port_open(settings.ports[self.port_key])

    def healthy(self, settings: Settings) -> bool:
        """Process alive and, for an API, answering HTTP on its port."""
        if not self.running(settings):
            return False
        if self.is_api:
            return http_answers(f"http://{HOST}:{settings.ports[self.port_key]}/", timeout=3)
        return True


SERVICES = [
    Service("keystone", "keystone_port", "keystone_wsgi:application",
            config_env=("OS_KEYSTONE_CONFIG_DIR", "keystone")),
    Service("placement", "placement_port", "placement_wsgi:application",
            config_env=("OS_PLACEMENT_CONFIG_DIR", "placement")),
    Service("glance", "glance_port", "glance_wsgi:application",
            config_env=("OS_GLANCE_CONFIG_DIR", "glance")),
    # in-memory state: exactly one worker
    Service("neutron", "neutron_port", "fake_neutron:application", code=("lib/wsgi/fake_neutron.py",)),
    Service("nova-conductor", console_script="nova-conductor"),
    Service("nova-scheduler", console_script="nova-scheduler"),
    Service("nova-api", "nova_port", "nova_api_wsgi:application", threads=8,
            config_env=("OS_NOVA_CONFIG_DIR", "nova")),
    Service("nova-compute", console_script="nova-compute",
            code=("lib/virt/devcloud_virt.py", "etc/nova/nova.conf")),
]
BY_NAME = {service.name: service for service in SERVICES}
