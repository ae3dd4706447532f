"""Where the devcloud lives and which ports it uses.

One ``Settings`` object is built per command from (highest wins) command-line
flags, ``DEVCLOUD_*`` environment variables and the defaults below. All state
goes under one folder (``base``) so that a wipe is a matter of removing a few
known sub-paths, and so that CI on the same machine can reuse the venv.
"""

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Tuple

HOST = "127.0.0.1"  # loopback only: nothing of the devcloud ever listens elsewhere

# option name -> (environment variable, default, help)
PORT_OPTIONS: Dict[str, Tuple[str, int, str]] = {
    "keystone_port": ("DEVCLOUD_KEYSTONE_PORT", 5000, "Keystone (identity) API port"),
    "nova_port": ("DEVCLOUD_NOVA_PORT", 8774, "Nova compute API port"),
    "placement_port": ("DEVCLOUD_PLACEMENT_PORT", 8778, "Placement API port"),
    "glance_port": ("DEVCLOUD_GLANCE_PORT", 9292, "Glance image API port"),
    "neutron_port": ("DEVCLOUD_NEUTRON_PORT", 9696, "fake Neutron API port"),
    "vnc_port": ("DEVCLOUD_VNC_PORT", 6080,
                 "port in the noVNC console URLs Nova hands out (nothing listens there)"),
    "rabbit_port": ("DEVCLOUD_RABBIT_PORT", 5672, "RabbitMQ AMQP port (shared broker)"),
    "mysql_port": ("DEVCLOUD_MYSQL_PORT", 3306, "MariaDB port (shared server)"),
}

DEFAULT_BASE = os.path.join(os.path.expanduser("~"), ".cache", "cloudmanagers-devcloud")

TOOLS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUPPORT_DIR = os.path.join(TOOLS_DIR, "devcloud.d")
PIN_FILE = os.path.join(TOOLS_DIR, "devcloud-requirements.txt")

# What the venv gets; exact versions come from PIN_FILE used as constraints.
VENV_PACKAGES = [
    "keystone", "nova", "openstack-placement", "glance", "gunicorn", "PyMySQL",
    "python-novaclient", "keystoneauth1", "python-keystoneclient", "python-glanceclient",
]

REGION = "RegionOne"
SERVICE_PASSWORD = "secret"   # keystone service users and the devcloud's DB user
ADMIN = {"username": "admin", "password": "secret", "project_name": "admin"}
DEMO = {"username": "demo", "password": "demo", "project_name": "demo"}
FLAVORS = [  # ids are fixed: the plugin's documented examples use flavor "1" and "2"
    {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1},
    {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
    {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40},
]
IMAGE_NAME = "cirros-fake"


@dataclass
class Settings:
    """One devcloud: its folder, its name (which prefixes its databases, vhost and host) and ports."""

    base: str = DEFAULT_BASE
    name: str = "devcloud"
    ports: Dict[str, int] = field(default_factory=dict)
    rabbit_user: str = "guest"
    rabbit_password: str = "guest"
    mysql_root_user: str = "root"
    mysql_root_password: str = ""

    # ----- derived names -------------------------------------------------
    @property
    def db_prefix(self) -> str:
        return self.name + "_"

    @property
    def db_user(self) -> str:
        return self.name

    @property
    def vhost(self) -> str:
        return self.name

    @property
    def databases(self) -> Dict[str, str]:
        return {key: self.db_prefix + key for key in
                ("keystone", "placement", "glance", "nova_api", "nova_cell0", "nova_cell1")}

    def db_url(self, key: str) -> str:
        return (f"mysql+pymysql://{self.db_user}:{SERVICE_PASSWORD}@{HOST}:{self.ports['mysql_port']}"
                f"/{self.databases[key]}?charset=utf8")

    @property
    def transport_url(self) -> str:
        return (f"rabbit://{self.rabbit_user}:{self.rabbit_password}@{HOST}:{self.ports['rabbit_port']}"
                f"/{self.vhost}")

    def url(self, port_key: str, path: str = "") -> str:
        return f"http://{HOST}:{self.ports[port_key]}{path}"

    @property
    def auth_url(self) -> str:
        return self.url("keystone_port", "/v3")

    @property
    def catalog(self) -> Dict[str, Tuple[str, str]]:
        """service type -> (service name, endpoint URL) registered in Keystone."""
        return {
            "identity": ("keystone", self.url("keystone_port", "/v3/")),
            "compute": ("nova", self.url("nova_port", "/v2.1")),
            "placement": ("placement", self.url("placement_port")),
            "image": ("glance", self.url("glance_port")),
            "network": ("neutron", self.url("neutron_port")),
        }

    # ----- paths ---------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.base, *parts)

    @property
    def venv(self) -> str:
        return self.path("venv")

    def venv_bin(self, executable: str) -> str:
        return self.path("venv", "bin", executable)

    @property
    def etc(self) -> str:
        return self.path("etc")

    @property
    def data(self) -> str:
        return self.path("data")

    @property
    def logs(self) -> str:
        return self.path("logs")

    @property
    def run(self) -> str:
        return self.path("run")

    @property
    def lib(self) -> str:
        """Copy of the WSGI shims and cloud scripts the running services use."""
        return self.path("lib")

    @property
    def conf_file(self) -> str:
        return self.path("cloudmanagers.conf")

    @property
    def clouds_yaml(self) -> str:
        return self.path("clouds.yaml")

    @property
    def facts_file(self) -> str:
        return self.path("devcloud.json")

    @property
    def cloud_params_file(self) -> str:
        """Internal JSON handed to the venv-side scripts (URLs, credentials)."""
        return self.path("etc", "cloud-params.json")

    @property
    def init_marker(self) -> str:
        return self.path("data", "initialized")


def _env_int(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"devcloud: {variable} must be a port number, got {raw!r}")


def from_args(args: argparse.Namespace) -> Settings:
    """Build Settings from parsed CLI args (attributes may be missing) + env."""
    base = getattr(args, "base", None) or os.environ.get("DEVCLOUD_BASE") or DEFAULT_BASE
    name = getattr(args, "name", None) or os.environ.get("DEVCLOUD_NAME") or "devcloud"
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        raise SystemExit("devcloud: name must match [a-z][a-z0-9_]{0,31} (it prefixes DB names)")
    ports = {}
    for key, (variable, default, _help) in PORT_OPTIONS.items():
        value = getattr(args, key, None)
        ports[key] = value if value is not None else _env_int(variable, default)
    return Settings(
        base=os.path.abspath(os.path.expanduser(base)),
        name=name,
        ports=ports,
        rabbit_user=os.environ.get("DEVCLOUD_RABBIT_USER", "guest"),
        rabbit_password=os.environ.get("DEVCLOUD_RABBIT_PASSWORD", "guest"),
        mysql_root_user=os.environ.get("DEVCLOUD_MYSQL_ROOT_USER", "root"),
        mysql_root_password=os.environ.get("DEVCLOUD_MYSQL_ROOT_PASSWORD", ""),
    )
