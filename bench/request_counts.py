#!/usr/bin/env python3
"""Count the Keystone and Nova/Glance/Neutron requests each action costs, against a recording HTTP fake.

Run:  python -m bench.request_counts   (from the repository root)
Every figure is counted in this run (requests the fake received), nothing is typed in, except
the 2013 plugin's column, which comes from reading its code (a token per helper call: about
6 token requests and 8 Nova requests for one VM-details read). The script exits non-zero if a
target of the core issue is missed.
"""

import os
import re
import sys
import tempfile
import time

import requests_mock

from cloudmanagers_plugin import CloudmanagersController
from cloudmanagers_plugin.request_context import running_request
from tests.support.fakecloud import IMAGE_ID, NOVA, PASSWORD, FakeCloud

CM = "bench"
LEGACY_DETAILS = (6, 8)  # 2013 plugin, VM details read: token requests, Nova requests
CONFIG = f"""[{CM}]
cm_type = openstack
keystone_base_url = http://127.0.0.1:5000/v2.0
tenant_name = demo
username = demo
password = {PASSWORD}
"""
APP_CREDENTIAL = "[{cm}]\ncm_type = openstack\nkeystone_base_url = http://127.0.0.1:5000/v3\n" \
                 "application_credential_id = {id}\napplication_credential_secret = {secret}\n"


def main() -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        handle.write(CONFIG)
    os.chmod(handle.name, 0o600)
    rows, failures = [], []
    with requests_mock.Mocker() as mocker:
        cloud = FakeCloud(mocker, page_size=1000)
        credential = cloud.add_app_credential()
        with open(handle.name, "a", encoding="utf-8") as config:
            config.write(APP_CREDENTIAL.format(cm="appcred", **credential))
        controller = CloudmanagersController(config_path=handle.name)

        def send(action, cm=CM, **attributes):
            reply = controller.process({"collection": "cloudmanagers", "action": action, "id": cm,
                                        "attributes": attributes})
            assert "error" not in reply, reply["error"]
            return reply["status"]

        def measure(label, target, action, **attributes):
            mocker.reset_mock()
            send(action, **attributes)
            keystone = cloud.count("keystone")
            nova = cloud.count("nova") + cloud.count("glance") + cloud.count("neutron")
            rows.append((label, keystone, nova, target))
            if target is not None and nova > target:
                failures.append(f"{label}: {nova} OpenStack requests, target {target}")

        # Warm-up: the first message of a section authenticates and lists flavors once.
        cloud.add_server("haproxy")
        mocker.reset_mock()
        send("read", name="haproxy")
        first = (cloud.count("keystone"), cloud.count("nova"))
        measure("VM details read", 1, "read", name="haproxy")
        for i in range(2499):
            cloud.add_server(f"vm{i:04d}")
        measure("list VMs (2,500 VMs, 1,000 a page)", 3, "read")
        measure("list images", 1, "read", listimages="1")
        measure("listflavors (3 flavors)", 1, "read", listflavors="1")
        cloud.keypairs += [{"name": f"key{i:04d}", "type": "ssh", "fingerprint": "x"} for i in range(2499)]
        measure("listkeys (2,500 key pairs, 1,000 a page)", 3, "read", listkeys="1")
        measure("listnetworks (networks + subnets, 1 page each)", 2, "read", listnetworks="1")
        measure("listsecuritygroups", 1, "read", listsecuritygroups="1")
        measure("listzones", 1, "read", listzones="1")
        measure("limits", 1, "read", limits="1")
        # A create looks for the name before and after creating: the second look is what stops two
        # agents racing on one name from leaving two VMs (one request more than the core target).
        measure("create (flavor id, image id)", 3, "create", name="new", flavor="1", image=IMAGE_ID)
        measure("create (flavor and image names)", 4, "create", name="new2", flavor="m1.tiny", image="cirros-fake")
        names = {"flavor": "m1.small", "image": "cirros-fake", "networks": ["backend"], "security_groups": ["web"]}
        controller = CloudmanagersController(config_path=handle.name)  # cold caches
        send("read", name="haproxy")
        measure("create, 4 kinds by name, first time", 3 + 4, "create", name="new3", **names)
        measure("create, 4 kinds by name, cached", 3, "create", name="new4", **names)
        measure("VM details (addresses...) repeated", 1, "read", name="haproxy")
        measure("status change (pause)", 2, "update", name="haproxy", status="PAUSED")
        measure("status already reached (no call)", 1, "update", name="haproxy", status="PAUSED")
        with running_request("bench-reboot"):  # from the agent: the reboot is recorded on the VM first
            measure("reboot sent by the agent", 3, "update", name="new", status="REBOOT")
        # A snapshot from the agent records its request on the image in the createImage itself and
        # looks again after it (a racing run of the same request); that look gives the image's status.
        measure("snapshot (legacy agent: unrecorded)", 3, "update", name="haproxy", snapshot="backup-1")
        with running_request("bench-snapshot"):
            measure("snapshot sent by the agent", 3, "update", name="haproxy", snapshot="backup-2")
        with running_request("bench-snapshot", redelivered=True):
            measure("snapshot redelivered, its image found", 2, "update", name="haproxy", snapshot="backup-2")
        measure("resize (step 1)", 2, "update", name="new", flavor="2")
        measure("resize (step 2: confirm)", 2, "update", name="new", flavor="2")
        measure("delete", 2, "delete", name="new2", force=True)

        # A fresh controller (cold, as after an agent start) for 1,000 VM-details reads.
        controller = CloudmanagersController(config_path=handle.name)
        mocker.reset_mock()
        for _ in range(1000):
            send("read", name="haproxy")
        tokens_for_1000 = cloud.count("keystone")

        # The same with an application credential section.
        controller = CloudmanagersController(config_path=handle.name)
        mocker.reset_mock()
        for _ in range(1000):
            send("read", cm="appcred", name="haproxy")
        app_tokens_for_1000 = cloud.count("keystone")

        # A VM-details read whose first Nova answer is 429 with Retry-After: 1.
        cloud.throttle("GET", rf"^{re.escape(NOVA)}/servers/detail(\?.*)?$", cloud._detail, retry_after="1")
        started = time.monotonic()
        send("read", name="haproxy")
        rate_limited_seconds = time.monotonic() - started
    os.unlink(handle.name)

    print(f"{'action':<48}{'keystone':>9}{'nova+glance+neutron':>21}{'target':>8}")
    for label, keystone, nova, target in rows:
        print(f"{label:<48}{keystone:>9}{nova:>21}{target if target is not None else '-':>8}")
    print(f"\nfirst message of a section (token, flavor list, VM, console URL): keystone {first[0]}, nova {first[1]}"
          " -- the flavor list is cached 10 min and a console URL 5 min, so later reads cost 1")
    details = next(row for row in rows if row[0] == "VM details read")
    print(f"VM details read, 2013 plugin: keystone {LEGACY_DETAILS[0]}, nova {LEGACY_DETAILS[1]}; "
          f"now: keystone {details[1]}, nova {details[2]} "
          f"({sum(LEGACY_DETAILS) / max(1, details[1] + details[2]):.0f}x fewer requests)")
    print(f"token requests for 1,000 VM-details reads to one section: {tokens_for_1000} "
          f"(2013 plugin: about {LEGACY_DETAILS[0] * 1000}, a token per helper call)")
    print(f"token requests for 1,000 VM-details reads to an application credential section: {app_tokens_for_1000}")
    print(f"VM-details read answered 429 with Retry-After: 1 once: success after {rate_limited_seconds:.2f} s")
    if tokens_for_1000 > 1 or app_tokens_for_1000 > 1:
        failures.append(f"{tokens_for_1000}/{app_tokens_for_1000} token requests for 1,000 messages, target 1")
    if not 1.0 <= rate_limited_seconds < 1.5:
        failures.append(f"a 429 with Retry-After: 1 took {rate_limited_seconds:.2f} s, target about 1 s")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
