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

from . import settings as S
from .util import write_file


def credentials():
    out = {}
    for who, cred in (("demo", S.DEMO), ("admin", S.ADMIN)):
        out[who] = dict(cred, user_domain_name="Default", project_domain_name="Default")
    return out


def cloud_params(st, extra=None):
    """Everything the cloud-side scripts need, as one JSON file."""
    params = {
        "auth_url": st.auth_url, "region": S.REGION, "credentials": credentials(),
        "service_password": S.SERVICE_PASSWORD,
        "catalog": {k: list(v) for k, v in st.catalog.items()},
        "flavors": S.FLAVORS, "image_name": S.IMAGE_NAME, "compute_host": st.name,
        "demo_quota": {"cores": -1, "ram": -1, "instances": 20},
    }
    params.update(extra or {})
    write_file(st.cloud_params_file, json.dumps(params, indent=2) + "\n", 0o600)
    return params


def cloudmanagers_conf(st):
    ks, nova = st.ports["keystone_port"], st.ports["nova_port"]
    return "\n".join([
        "# Written by tools/devcloud start; the demo user of the local devcloud.",
        "[devcloud_legacy]",
        "cm_type = openstack",
        "url = http://127.0.0.1",
        "keystone_base_url = http://127.0.0.1:%d/v2.0" % ks,
        "nova_base_url = http://127.0.0.1:%d/v2/" % nova,
        "tenant_name = demo",
        "username = demo",
        "password = demo",
        "",
        "[devcloud]",
        "cm_type = openstack",
        "url = http://127.0.0.1",
        "keystone_base_url = http://127.0.0.1:%d/v3" % ks,
        "project_name = demo",
        "username = demo",
        "password = demo",
        "user_domain_name = Default",
        "project_domain_name = Default",
        "region_name = %s" % S.REGION,
        "timeout = 30",
        "",
    ])


def clouds_yaml(st):
    lines = ["# Written by tools/devcloud start (openstacksdk clouds.yaml format).", "clouds:"]
    for cloud, who in (("devcloud", "demo"), ("devcloud-admin", "admin")):
        cred = credentials()[who]
        lines += [
            "  %s:" % cloud,
            "    auth:",
            "      auth_url: %s" % st.auth_url,
            "      username: %s" % cred["username"],
            "      password: %s" % cred["password"],
            "      project_name: %s" % cred["project_name"],
            "      user_domain_name: Default",
            "      project_domain_name: Default",
            "    region_name: %s" % S.REGION,
            "    interface: public",
            "    identity_api_version: 3",
        ]
    return "\n".join(lines) + "\n"


def facts(st, cloud_result):
    return {
        "format": 1,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base": st.base,
        "name": st.name,
        "host": S.HOST,
        "region_name": S.REGION,
        "auth_url": st.auth_url,
        "ports": {k[:-5]: v for k, v in st.ports.items()},
        "endpoints": {
            "identity": st.url("keystone_port", "/v3/"),
            "compute": st.url("nova_port", "/v2.1"),
            "compute_legacy": st.url("nova_port", "/v2/"),
            "placement": st.url("placement_port"),
            "image": st.url("glance_port"),
            "network": st.url("neutron_port"),
            "novncproxy": st.url("vnc_port", "/vnc_auto.html"),
        },
        "compute_max_microversion": cloud_result.get("compute_max_microversion"),
        "credentials": credentials(),
        # flat shortcuts for the most used facts
        "cloudmanagers_conf": st.conf_file,
        "clouds_yaml": st.clouds_yaml,
        "image_id": cloud_result.get("image_id"),
        "flavor_ids": {f["name"]: f["id"] for f in S.FLAVORS},
        "demo_project_id": cloud_result.get("demo_project_id"),
        "flavors": {f["name"]: dict(f) for f in S.FLAVORS},
        "image": {"name": S.IMAGE_NAME, "id": cloud_result.get("image_id")},
        "network": {"name": "private", "cidr": "10.0.0.0/24"},
        "networks": {"private": "10.0.0.0/24", "backend": "10.1.0.0/24"},
        "security_groups": ["default", "web"],
        "compute_host": st.name,
        "rabbitmq": {"url": st.transport_url, "vhost": st.vhost},
        "databases": st.databases,
        "files": {
            "cloudmanagers_conf": st.conf_file,
            "clouds_yaml": st.clouds_yaml,
            "facts": st.facts_file,
            "logs_dir": st.logs,
            "run_dir": st.run,
            "venv_python": st.venv_bin("python"),
        },
        "cloudmanagers_sections": {"legacy": "devcloud_legacy", "v3": "devcloud"},
    }


def write_all(st, cloud_result):
    write_file(st.conf_file, cloudmanagers_conf(st), 0o600)
    write_file(st.clouds_yaml, clouds_yaml(st), 0o600)
    write_file(st.facts_file, json.dumps(facts(st, cloud_result), indent=2) + "\n", 0o644)
    os.chmod(st.conf_file, 0o600)
