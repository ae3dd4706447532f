"""Files ``start`` writes for the rest of the project:

* ``cloudmanagers.conf`` (0600): the plugin's config, one section in the
  2013 legacy spelling (``devcloud_legacy``) and one in Keystone v3 spelling
  (``devcloud``);
* ``clouds.yaml`` (0600): openstacksdk/openstackclient entries ``devcloud``
  (demo) and ``devcloud-admin``;
* ``devcloud.json``: machine-readable facts for tests;
* ``etc/cloud-params.json`` (0600): the input of the venv-side scripts.
"""

import json
import os
import time
from typing import Any, Dict, Optional

from .settings import ADMIN, DEMO, FLAVORS, HOST, IMAGE_NAME, REGION, SERVICE_PASSWORD, Settings
from .util import write_file


def credentials() -> Dict[str, Dict[str, str]]:
    """The demo and admin logins, with their (Default) domains."""
    return {who: dict(login, user_domain_name="Default", project_domain_name="Default")
            for who, login in (("demo", DEMO), ("admin", ADMIN))}


def cloud_params(settings: Settings, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Everything the cloud-side scripts need, as one JSON file."""
    params = {
        "auth_url": settings.auth_url, "region": REGION, "credentials": credentials(),
        "service_password": SERVICE_PASSWORD,
        "catalog": {service_type: list(entry) for service_type, entry in settings.catalog.items()},
        "flavors": FLAVORS, "image_name": IMAGE_NAME, "compute_host": settings.name,
        "demo_quota": {"cores": -1, "ram": -1, "instances": 20},
    }
    params.update(extra or {})
    write_file(settings.cloud_params_file, json.dumps(params, indent=2) + "\n", 0o600)
    return params


def cloudmanagers_conf(settings: Settings) -> str:
    """The plugin's config for the demo user: the 2013 spelling and the v3 one, both tested."""
    keystone, nova = settings.ports["keystone_port"], settings.ports["nova_port"]
    return "\n".join([
        "# Written by tools/devcloud start; the demo user of the local devcloud.",
        "[devcloud_legacy]",
        "cm_type = openstack",
        "url = http://127.0.0.1",
        f"keystone_base_url = http://127.0.0.1:{keystone}/v2.0",
        f"nova_base_url = http://127.0.0.1:{nova}/v2/",
        "tenant_name = demo",
        "username = demo",
        "password = demo",
        "",
        "[devcloud]",
        "cm_type = openstack",
        "url = http://127.0.0.1",
        f"keystone_base_url = http://127.0.0.1:{keystone}/v3",
        "project_name = demo",
        "username = demo",
        "password = demo",
        "user_domain_name = Default",
        "project_domain_name = Default",
        f"region_name = {REGION}",
        "timeout = 30",
        "",
    ])


def clouds_yaml(settings: Settings) -> str:
    lines = ["# Written by tools/devcloud start (openstacksdk clouds.yaml format).", "clouds:"]
    for cloud, who in (("devcloud", "demo"), ("devcloud-admin", "admin")):
        login = credentials()[who]
        lines += [
            f"  {cloud}:",
            "    auth:",
            f"      auth_url: {settings.auth_url}",
            f"      username: {login['username']}",
            f"      password: {login['password']}",
            f"      project_name: {login['project_name']}",
            "      user_domain_name: Default",
            "      project_domain_name: Default",
            f"    region_name: {REGION}",
            "    interface: public",
            "    identity_api_version: 3",
        ]
    return "\n".join(lines) + "\n"


def facts(settings: Settings, cloud_result: Dict[str, Any]) -> Dict[str, Any]:
    """``devcloud.json``: what tests need to know of this devcloud (tools/README.md lists the keys)."""
    return {
        "format": 1,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base": settings.base,
        "name": settings.name,
        "host": HOST,
        "region_name": REGION,
        "auth_url": settings.auth_url,
        "ports": {key[:-len("_port")]: port for key, port in settings.ports.items()},
        "endpoints": {
            "identity": settings.url("keystone_port", "/v3/"),
            "compute": settings.url("nova_port", "/v2.1"),
            "compute_legacy": settings.url("nova_port", "/v2/"),
            "placement": settings.url("placement_port"),
            "image": settings.url("glance_port"),
            "network": settings.url("neutron_port"),
            "novncproxy": settings.url("vnc_port", "/vnc_auto.html"),
        },
        "compute_max_microversion": cloud_result.get("compute_max_microversion"),
        "credentials": credentials(),
        # flat shortcuts for the most used facts
        "cloudmanagers_conf": settings.conf_file,
        "clouds_yaml": settings.clouds_yaml,
        "image_id": cloud_result.get("image_id"),
        "flavor_ids": {flavor["name"]: flavor["id"] for flavor in FLAVORS},
        "demo_project_id": cloud_result.get("demo_project_id"),
        "flavors": {flavor["name"]: dict(flavor) for flavor in FLAVORS},
        "image": {"name": IMAGE_NAME, "id": cloud_result.get("image_id")},
        "network": {"name": "private", "cidr": "10.0.0.0/24"},
        "networks": {"private": "10.0.0.0/24", "backend": "10.1.0.0/24"},
        "security_groups": ["default", "web"],
        "compute_host": settings.name,
        "rabbitmq": {"url": settings.transport_url, "vhost": settings.vhost},
        # Nova's versioned notifications: a section's notifications_url and notifications_exchange
        "notifications": {"url": settings.transport_url, "exchange": "nova", "topic": "versioned_notifications"},
        "databases": settings.databases,
        "files": {
            "cloudmanagers_conf": settings.conf_file,
            "clouds_yaml": settings.clouds_yaml,
            "facts": settings.facts_file,
            "logs_dir": settings.logs,
            "run_dir": settings.run,
            "venv_python": settings.venv_bin("python"),
        },
        "cloudmanagers_sections": {"legacy": "devcloud_legacy", "v3": "devcloud"},
    }


def write_all(settings: Settings, cloud_result: Dict[str, Any]) -> None:
    """Write cloudmanagers.conf, clouds.yaml and devcloud.json."""
    write_file(settings.conf_file, cloudmanagers_conf(settings), 0o600)
    write_file(settings.clouds_yaml, clouds_yaml(settings), 0o600)
    write_file(settings.facts_file, json.dumps(facts(settings, cloud_result), indent=2) + "\n", 0o644)
    os.chmod(settings.conf_file, 0o600)
