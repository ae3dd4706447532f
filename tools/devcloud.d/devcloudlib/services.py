"""The devcloud's daemons: how each is launched and how its health is judged.

API services run under gunicorn (1 worker, threads) from the entry modules in
``<base>/lib/wsgi``; the Nova back-end services run as their console scripts
with native threads. Every one is a process group of its own with a pid file
in ``<base>/run`` and a log in ``<base>/logs``.
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

from . import procs
from .util import http_answers, port_open


@dataclass
class Service:
    name: str
    port_key: Optional[str] = None     # API services: settings port key
    module: Optional[str] = None       # gunicorn "module:callable"
    threads: int = 4
    config_env: Optional[tuple] = None  # (variable, etc sub-folder) for the WSGI app
    console_script: Optional[str] = None
    # files (relative to <base>) whose content is what the process runs: when one changes, a
    # warm `start` restarts the service
    code: tuple = ()

    @property
    def is_api(self):
        return self.module is not None

    def pidfile(self, st):
        return os.path.join(st.run, self.name + ".pid")

    def logfile(self, st):
        return os.path.join(st.logs, self.name + ".log")

    def argv(self, st):
        if self.is_api:
            return [st.venv_bin("gunicorn"), "--no-control-socket",
                    "--chdir", os.path.join(st.lib, "wsgi"), "--name", "devcloud-" + self.name,
                    "--workers", "1", "--threads", str(self.threads), "--timeout", "300",
                    "--graceful-timeout", "5", "--bind", "127.0.0.1:%d" % st.ports[self.port_key],
                    self.module]
        return [st.venv_bin(self.console_script), "--config-file",
                os.path.join(st.etc, "nova", "nova.conf")]

    def env(self, st):
        env = dict(os.environ)
        env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
                    "PATH": os.path.join(st.venv, "bin") + os.pathsep + env.get("PATH", "")})
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        if self.config_env:
            var, sub = self.config_env
            env[var] = os.path.join(st.etc, sub)
        return env

    def start(self, st):
        return procs.spawn(self.argv(st), self.pidfile(st), self.logfile(st),
                           env=self.env(st), cwd=st.run)

    def _code_file(self, st):
        return os.path.join(st.run, self.name + ".code")

    def code_stamp(self, st):
        digest = hashlib.sha256()
        for rel in self.code:
            with open(os.path.join(st.base, rel), "rb") as f:
                digest.update(f.read())
        return digest.hexdigest()

    def record_code(self, st):
        if self.code:
            with open(self._code_file(st), "w") as f:
                f.write(self.code_stamp(st) + "\n")

    def code_changed(self, st):
        """True when the running process was started from other code than what is on disk now."""
        if not self.code:
            return False
        try:
            with open(self._code_file(st)) as f:
                return f.read().strip() != self.code_stamp(st)
        except OSError:
            return True  # started before stamps were kept

    def running(self, st):
        return procs.pid_alive(self.pidfile(st))

    def port_in_use(self, st):
        return self.is_api and port_open(st.ports[self.port_key])

    def healthy(self, st):
        """Process alive and, for an API, answering HTTP on its port."""
        if not self.running(st):
            return False
        if self.is_api:
            return http_answers("http://127.0.0.1:%d/" % st.ports[self.port_key], timeout=3)
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
BY_NAME = {s.name: s for s in SERVICES}
