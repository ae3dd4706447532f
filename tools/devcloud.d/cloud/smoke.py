"""Prove a server can boot: as demo, boot the smallest flavor with the seeded
image until ACTIVE, then delete it and wait until it is gone.

``start`` only returns after this passed, so a returned ``start`` means the
whole path (Keystone, Nova API, scheduler, Placement, conductor, compute,
Glance, fake Neutron, RabbitMQ, MariaDB) works.
"""

import time

from novaclient import exceptions as nova_exc

from common import log, nova, poll


def run(params, timeout=120):
    nv = nova(params, "demo")
    flavor = params["flavors"][0]["id"]
    image = params["image_id"]
    t0 = time.monotonic()
    server = nv.servers.create("devcloud-smoke-%d" % int(time.time()), image, flavor)

    def active():
        s = nv.servers.get(server.id)
        if s.status == "ERROR":
            raise RuntimeError("smoke server %s went to ERROR: %s" % (
                s.id, getattr(s, "fault", {}).get("message", "(no fault)")))
        return s.status == "ACTIVE"
    try:
        poll(active, timeout, "smoke server ACTIVE", interval=0.2)
        boot = time.monotonic() - t0
    finally:
        try:
            nv.servers.delete(server.id)
        except nova_exc.NotFound:
            pass

    def gone():
        try:
            nv.servers.get(server.id)
            return False
        except nova_exc.NotFound:
            return True
    poll(gone, 60, "smoke server deleted", interval=0.2)
    total = time.monotonic() - t0
    log("smoke server booted to ACTIVE in %.1fs, deleted after %.1fs total" % (boot, total))
    return {"smoke_boot_seconds": round(boot, 2), "smoke_total_seconds": round(total, 2)}
