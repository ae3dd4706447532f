"""Configuration files of the OpenStack services, rendered on every start.

Rendering each time is cheap and keeps ports/paths in line with the current
settings. No ``log_file`` is set: oslo.log then writes to stdout, which the
launcher sends to ``<base>/logs/<service>.log`` together with tracebacks on
stderr, one file per service.
"""

import os
import shutil
from typing import Any, Dict

from .settings import HOST, REGION, SERVICE_PASSWORD, Settings
from .util import write_file

Sections = Dict[str, Dict[str, Any]]


def _ini(sections: Sections) -> str:
    lines = []
    for name, options in sections.items():
        lines.append(f"[{name}]")
        for key, value in options.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def _service_auth(settings: Settings, username: str, with_www: bool = True, v3: bool = False) -> Dict[str, Any]:
    """keystone_authtoken-style block for a service user in project 'service'."""
    url = settings.url("keystone_port", "/v3" if v3 else "/")
    block = {}
    if with_www:
        block["www_authenticate_uri"] = settings.url("keystone_port", "/")
    block.update({
        "auth_url": url, "auth_type": "password",
        "project_domain_name": "Default", "user_domain_name": "Default",
        "project_name": "service", "username": username, "password": SERVICE_PASSWORD,
    })
    return block


def keystone_conf(settings: Settings) -> str:
    return _ini({
        "DEFAULT": {"debug": False},
        "database": {"connection": settings.db_url("keystone")},
        "token": {"provider": "fernet"},
        "fernet_tokens": {"key_repository": os.path.join(settings.data, "fernet-keys")},
        "credential": {"key_repository": os.path.join(settings.data, "credential-keys")},
        # one keystone process: an in-process cache is coherent and cuts an
        # authenticated request from ~250 ms (about 200 SQL queries) to a few ms
        "cache": {"enabled": True, "backend": "oslo_cache.dict", "expiration_time": 600},
        # tests authenticate a lot; the default bcrypt cost makes each login slow
        "identity": {"password_hash_rounds": 4},
    })


def placement_conf(settings: Settings) -> str:
    auth = _service_auth(settings, "placement")
    auth.update({"memcached_servers": "", "service_token_roles_required": True})
    return _ini({
        "DEFAULT": {"debug": False},
        "api": {"auth_strategy": "keystone"},
        "placement_database": {"connection": settings.db_url("placement")},
        "keystone_authtoken": auth,
    })


def glance_conf(settings: Settings) -> str:
    auth = _service_auth(settings, "glance")
    auth["memcached_servers"] = ""
    images = os.path.join(settings.data, "glance")
    return _ini({
        "DEFAULT": {"debug": False, "enabled_backends": "fs:file",
                    "worker_self_reference_url": settings.url("glance_port")},
        "database": {"connection": settings.db_url("glance")},
        "glance_store": {"default_backend": "fs"},
        "fs": {"filesystem_store_datadir": images + "/images/"},
        "os_glance_staging_store": {"filesystem_store_datadir": images + "/staging/"},
        "os_glance_tasks_store": {"filesystem_store_datadir": images + "/tasks/"},
        "paste_deploy": {"flavor": "keystone",
                         "config_file": os.path.join(settings.etc, "glance", "glance-api-paste.ini")},
        "keystone_authtoken": auth,
        "oslo_policy": {"enforce_new_defaults": True},
    })


def nova_conf(settings: Settings) -> str:
    nova_data = os.path.join(settings.data, "nova")
    authtoken = _service_auth(settings, "nova")
    authtoken["memcached_servers"] = ""
    service_user = _service_auth(settings, "nova", with_www=False)
    service_user = {"send_service_user_token": True, **service_user}
    return _ini({
        "DEFAULT": {
            "debug": False,
            "host": settings.name,
            "my_ip": HOST,
            "state_path": os.path.join(nova_data, "state"),
            "instances_path": os.path.join(nova_data, "instances"),
            "transport_url": settings.transport_url,
            # FakeDriver plus a stable node UUID kept in state_path/compute_id
            # (plain FakeDriver invents a new node UUID per process, so after a
            # stop/start nova-compute refuses to run: "No local node identity"),
            # whose snapshots are uploaded to Glance (lib/virt/devcloud_virt.py)
            "compute_driver": "devcloud_virt.SnapshottingFakeDriver",
            "allow_resize_to_same_host": True,
            "heal_instance_info_cache_interval": -1,
            "vif_plugging_timeout": 0,
            "vif_plugging_is_fatal": False,
            "instance_usage_audit": False,
            # periodic tasks (the scheduler's host discovery) start at once
            # instead of after a random 0-60 s delay
            "periodic_fuzzy_delay": 0,
        },
        "api": {"auth_strategy": "keystone"},
        "wsgi": {"api_paste_config": os.path.join(settings.etc, "nova", "api-paste.ini")},
        "api_database": {"connection": settings.db_url("nova_api")},
        "database": {"connection": settings.db_url("nova_cell1")},
        "oslo_concurrency": {"lock_path": os.path.join(nova_data, "lock")},
        "keystone_authtoken": authtoken,
        "service_user": service_user,
        "placement": {"region_name": REGION, **_service_auth(settings, "placement", False, True)},
        "glance": {"region_name": REGION},
        "neutron": {"region_name": REGION, **_service_auth(settings, "neutron", False, True)},
        "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": 2},
        "filter_scheduler": {"enabled_filters": ",".join([
            "ComputeFilter", "ComputeCapabilitiesFilter", "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter", "ServerGroupAffinityFilter"])},
        "conductor": {"workers": 1},
        # versioned notifications (instance.*, one per state and task-state change) on the
        # devcloud's vhost, exchange "nova", topic versioned_notifications: the agent's fast
        # path for change events listens there
        "notifications": {"notification_format": "versioned", "notify_on_state_change": "vm_and_task_state"},
        "oslo_messaging_notifications": {"driver": "messagingv2"},
        # the fake driver answers console requests, so the remote-console API
        # returns a noVNC URL (nothing has to listen on the proxy port)
        "vnc": {"enabled": True,
                "novncproxy_base_url": settings.url("vnc_port", "/vnc_auto.html"),
                "server_listen": HOST, "server_proxyclient_address": HOST},
        "oslo_policy": {"enforce_scope": True, "enforce_new_defaults": True},
    })


def write_all(settings: Settings) -> None:
    """Write every service config plus the paste files copied from the wheels."""
    etc = settings.etc
    write_file(os.path.join(etc, "keystone", "keystone.conf"), keystone_conf(settings), 0o600)
    write_file(os.path.join(etc, "placement", "placement.conf"), placement_conf(settings), 0o600)
    write_file(os.path.join(etc, "glance", "glance-api.conf"), glance_conf(settings), 0o600)
    write_file(os.path.join(etc, "nova", "nova.conf"), nova_conf(settings), 0o600)
    shutil.copyfile(os.path.join(settings.venv, "etc", "nova", "api-paste.ini"),
                    os.path.join(etc, "nova", "api-paste.ini"))
    shutil.copyfile(os.path.join(settings.venv, "etc", "glance", "glance-api-paste.ini"),
                    os.path.join(etc, "glance", "glance-api-paste.ini"))
    for folder in ("glance/images", "glance/staging", "glance/tasks", "nova/state",
                   "nova/instances", "nova/lock"):
        os.makedirs(os.path.join(settings.data, folder), exist_ok=True)
    for folder in ("fernet-keys", "credential-keys"):  # keystone warns if others can read keys
        os.makedirs(os.path.join(settings.data, folder), mode=0o700, exist_ok=True)
        os.chmod(os.path.join(settings.data, folder), 0o700)
