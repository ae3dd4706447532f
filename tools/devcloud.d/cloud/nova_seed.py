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
from typing import Any, Dict, List, Optional

from common import Params, log, nova, poll, session

IMAGE_BYTES = 1024 * 1024  # the fake virt driver never reads the image


def wait_compute_up(params: Params, timeout: float = 120) -> Any:
    """Wait until nova-compute reports up and enabled; returns an admin novaclient."""
    client = nova(params, "admin")

    def up() -> Optional[Any]:
        for service in client.services.list(binary="nova-compute"):
            if service.host == params["compute_host"] and service.state == "up" and service.status == "enabled":
                return service
        return None

    poll(up, timeout, "nova-compute up in os-services", interval=0.3)
    log(f"nova-compute on host {params['compute_host']} is up")
    return client


def ensure_flavors(client: Any, flavors: List[Dict[str, Any]]) -> None:
    """The seeded flavors with their fixed ids (a flavor that differs is made again)."""
    existing = {flavor.id: flavor for flavor in client.flavors.list(is_public=None)}
    for spec in flavors:
        flavor = existing.get(spec["id"])
        if flavor is not None and (flavor.name, flavor.ram, flavor.vcpus, flavor.disk) == (
                spec["name"], spec["ram"], spec["vcpus"], spec["disk"]):
            continue
        if flavor is not None:
            client.flavors.delete(flavor)
        client.flavors.create(spec["name"], spec["ram"], spec["vcpus"], spec["disk"],
                              flavorid=spec["id"], is_public=True)
        log(f"flavor {spec['name']} (id {spec['id']}) created")


def _image_data() -> io.BytesIO:
    """The image's bytes: a hash chain, the same from one start to the next."""
    data, block, counter = io.BytesIO(), b"devcloud", 0
    while data.tell() < IMAGE_BYTES:
        block = hashlib.sha256(block + str(counter).encode()).digest()
        data.write(block * 128)
        counter += 1
    data.seek(0)
    return data


def ensure_image(params: Params) -> str:
    """The public image, uploaded once; returns its id."""
    from glanceclient import Client
    glance = Client("2", session=session(params, "admin"), region_name=params["region"])
    name = params["image_name"]
    images = [image for image in glance.images.list(filters={"name": name}) if image.status == "active"]
    if images:
        return images[0].id
    for stale in glance.images.list(filters={"name": name}):
        glance.images.delete(stale.id)
    image = glance.images.create(name=name, disk_format="raw", container_format="bare",
                                 visibility="public", min_disk=0, min_ram=0)
    glance.images.upload(image.id, _image_data(), image_size=IMAGE_BYTES)
    poll(lambda: glance.images.get(image.id).status == "active", 60, f"image {name} active")
    log(f"image {name} uploaded ({image.id})")
    return image.id


def open_quota(client: Any, project_id: str, quota: Dict[str, int]) -> None:
    current = client.quotas.get(project_id)
    if any(getattr(current, key) != value for key, value in quota.items()):
        client.quotas.update(project_id, **quota)
        log(f"demo quota set: {quota}")


def run(params: Params) -> Dict[str, Any]:
    """Seed flavors, image and quota; returns the ids and the compute API's microversion."""
    client = wait_compute_up(params)
    ensure_flavors(client, params["flavors"])
    image_id = ensure_image(params)
    demo_project = session(params, "demo").get_project_id()
    open_quota(client, demo_project, params["demo_quota"])
    versions = client.versions.get_current()
    return {"image_id": image_id, "demo_project_id": demo_project,
            "compute_max_microversion": getattr(versions, "version", None)}
