"""Make the compute side usable: wait for nova-compute, create the flavors and
the public image, open the demo project's core/RAM quota.

Readiness is judged on nova-compute itself (its service is up in
os-services): the APIs answer long before a server could be scheduled.
Quota: cores and RAM of the demo project are unlimited so that a flavor with
absurd vCPUs gets past the API quota check and fails in the scheduler, which
gives a server in ERROR with a ``fault`` (what end-to-end tests need).
"""

import hashlib
import io

from common import log, nova, poll, session

IMAGE_BYTES = 1024 * 1024  # the fake virt driver never reads the image


def wait_compute_up(params, timeout=120):
    nv = nova(params, "admin")

    def up():
        for s in nv.services.list(binary="nova-compute"):
            if s.host == params["compute_host"] and s.state == "up" and s.status == "enabled":
                return s
        return None
    poll(up, timeout, "nova-compute up in os-services", interval=0.3)
    log("nova-compute on host %s is up" % params["compute_host"])
    return nv


def ensure_flavors(nv, flavors):
    existing = {f.id: f for f in nv.flavors.list(is_public=None)}
    for spec in flavors:
        f = existing.get(spec["id"])
        if f is not None and (f.name, f.ram, f.vcpus, f.disk) == (
                spec["name"], spec["ram"], spec["vcpus"], spec["disk"]):
            continue
        if f is not None:
            nv.flavors.delete(f)
        nv.flavors.create(spec["name"], spec["ram"], spec["vcpus"], spec["disk"],
                          flavorid=spec["id"], is_public=True)
        log("flavor %s (id %s) created" % (spec["name"], spec["id"]))


def _image_data():
    out, block, n = io.BytesIO(), b"devcloud", 0
    while out.tell() < IMAGE_BYTES:
        block = hashlib.sha256(block + str(n).encode()).digest()
        out.write(block * 128)
        n += 1
    out.seek(0)
    return out


def ensure_image(params):
    from glanceclient import Client
    gl = Client("2", session=session(params, "admin"), region_name=params["region"])
    name = params["image_name"]
    images = [i for i in gl.images.list(filters={"name": name}) if i.status == "active"]
    if images:
        return images[0].id
    for stale in gl.images.list(filters={"name": name}):
        gl.images.delete(stale.id)
    img = gl.images.create(name=name, disk_format="raw", container_format="bare",
                           visibility="public", min_disk=0, min_ram=0)
    gl.images.upload(img.id, _image_data(), image_size=IMAGE_BYTES)
    poll(lambda: gl.images.get(img.id).status == "active", 60, "image %s active" % name)
    log("image %s uploaded (%s)" % (name, img.id))
    return img.id


def open_quota(nv, project_id, quota):
    current = nv.quotas.get(project_id)
    if any(getattr(current, k) != v for k, v in quota.items()):
        nv.quotas.update(project_id, **quota)
        log("demo quota set: %s" % quota)


def run(params):
    nv = wait_compute_up(params)
    ensure_flavors(nv, params["flavors"])
    image_id = ensure_image(params)
    demo_project = session(params, "demo").get_project_id()
    open_quota(nv, demo_project, params["demo_quota"])
    versions = nv.versions.get_current()
    return {"image_id": image_id, "demo_project_id": demo_project,
            "compute_max_microversion": getattr(versions, "version", None)}
