"""Prove a server can boot: as demo, boot the smallest flavor with the seeded
image until ACTIVE, then delete it and wait until it is gone.

``start`` only returns after this passed, so a returned ``start`` means the
whole path (Keystone, Nova API, scheduler, Placement, conductor, compute,
Glance, fake Neutron, RabbitMQ, MariaDB) works.
"""

import time
from typing import Dict

from novaclient import exceptions as nova_exc

from common import Params, log, nova, poll


def run(params: Params, timeout: float = 120) -> Dict[str, float]:
    """Boot and delete one server; returns how long the boot and the whole took."""
    client = nova(params, "demo")
    flavor = params["flavors"][0]["id"]
    image = params["image_id"]
    started = time.monotonic()
    server = client.servers.create(f"devcloud-smoke-{int(time.time())}", image, flavor)

    def active() -> bool:
        current = client.servers.get(server.id)
        if current.status == "ERROR":
            raise RuntimeError(f"smoke server {current.id} went to ERROR: "
                               f"{getattr(current, 'fault', {}).get('message', '(no fault)')}")
        return current.status == "ACTIVE"

    try:
        poll(active, timeout, "smoke server ACTIVE", interval=0.2)
        boot = time.monotonic() - started
    finally:
        try:
            client.servers.delete(server.id)
        except nova_exc.NotFound:
            pass

    def gone() -> bool:
        try:
            client.servers.get(server.id)
            return False
        except nova_exc.NotFound:
            return True

    poll(gone, 60, "smoke server deleted", interval=0.2)
    total = time.monotonic() - started
    log(f"smoke server booted to ACTIVE in {boot:.1f}s, deleted after {total:.1f}s total")
    return {"smoke_boot_seconds": round(boot, 2), "smoke_total_seconds": round(total, 2)}
