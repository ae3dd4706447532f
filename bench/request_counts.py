#!/usr/bin/env python3
"""Count the Keystone and Nova/Glance requests each action costs, against a recording HTTP fake.

Run:  python -m bench.request_counts   (from the repository root)
Every figure is counted in this run (requests the fake received), nothing is typed in, except
the 2013 plugin's column, which comes from reading its code (a token per helper call: about
6 token requests and 8 Nova requests for one VM-details read). The script exits non-zero if a
target of the core issue is missed.
"""

import os
import sys
import tempfile

import requests_mock

from cloudmanagers_plugin import CloudmanagersController
from cloudmanagers_plugin.request_context import running_request
from tests.support.fakecloud import IMAGE_ID, PASSWORD, FakeCloud

CM = "bench"
LEGACY_DETAILS = (6, 8)  # 2013 plugin, VM details read: token requests, Nova requests
CONFIG = f"""[{CM}]
cm_type = openstack
keystone_base_url = http://127.0.0.1:5000/v2.0
tenant_name = demo
username = demo
password = {PASSWORD}
"""


def main() -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        handle.write(CONFIG)
    os.chmod(handle.name, 0o600)
    rows, failures = [], []
    with requests_mock.Mocker() as mocker:
        cloud = FakeCloud(mocker, page_size=1000)
        controller = CloudmanagersController(config_path=handle.name)

        def send(action, **attributes):
            reply = controller.process({"collection": "cloudmanagers", "action": action, "id": CM,
                                        "attributes": attributes})
            assert "error" not in reply, reply["error"]
            return reply["status"]

        def measure(label, target, action, **attributes):
            mocker.reset_mock()
            send(action, **attributes)
            keystone, nova = cloud.count("keystone"), cloud.count("nova") + cloud.count("glance")
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
        # A create looks for the name before and after creating: the second look is what stops two
        # agents racing on one name from leaving two VMs (one request more than the core target).
        measure("create (flavor id, image id)", 3, "create", name="new", flavor="1", image=IMAGE_ID)
        measure("create (flavor and image names)", 4, "create", name="new2", flavor="m1.tiny", image="cirros-fake")
        measure("status change (pause)", 2, "update", name="haproxy", status="PAUSED")
        measure("status already reached (no call)", 1, "update", name="haproxy", status="PAUSED")
        with running_request("bench-reboot"):  # from the agent: the reboot is recorded on the VM first
            measure("reboot sent by the agent", 3, "update", name="new", status="REBOOT")
        measure("resize (step 1)", 2, "update", name="new", flavor="2")
        measure("resize (step 2: confirm)", 2, "update", name="new", flavor="2")
        measure("delete", 2, "delete", name="new2", force=True)

        # A fresh controller (cold, as after an agent start) for 1,000 VM-details reads.
        controller = CloudmanagersController(config_path=handle.name)
        mocker.reset_mock()
        for _ in range(1000):
            send("read", name="haproxy")
        tokens_for_1000 = cloud.count("keystone")
    os.unlink(handle.name)

    print(f"{'action':<38}{'keystone':>9}{'nova+glance':>13}{'target':>8}")
    for label, keystone, nova, target in rows:
        print(f"{label:<38}{keystone:>9}{nova:>13}{target if target is not None else '-':>8}")
    print(f"\nfirst message of a section (token, flavor list, VM, console URL): keystone {first[0]}, nova {first[1]}"
          " -- the flavor list is cached 10 min and a console URL 5 min, so later reads cost 1")
    details = next(row for row in rows if row[0] == "VM details read")
    print(f"VM details read, 2013 plugin: keystone {LEGACY_DETAILS[0]}, nova {LEGACY_DETAILS[1]}; "
          f"now: keystone {details[1]}, nova {details[2]} "
          f"({sum(LEGACY_DETAILS) / max(1, details[1] + details[2]):.0f}x fewer requests)")
    print(f"token requests for 1,000 VM-details reads to one section: {tokens_for_1000} "
          f"(2013 plugin: about {LEGACY_DETAILS[0] * 1000}, a token per helper call)")
    if tokens_for_1000 > 1:
        failures.append(f"{tokens_for_1000} token requests for 1,000 messages, target 1")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
