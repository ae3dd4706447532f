"""OpenStack API bodies -> the plain dicts and values that replies carry.

Pure functions, no HTTP: the driver fetches, these pick and rename fields, so each reply key
is defined in one place and unit tests can check it without a cloud.
"""

from typing import Any, Dict, List, Optional

from .base import Server


def server(body: Dict[str, Any]) -> Server:
    """A Nova server body (microversion 2.47 or later: flavor embedded) -> ``Server``."""
    flavor = body.get("flavor") or {}
    fault = body.get("fault") or {}
    image = body.get("image")
    return Server(
        id=body["id"],
        name=body.get("name", ""),
        status=body.get("status", "UNKNOWN"),
        task_state=body.get("OS-EXT-STS:task_state"),
        flavor_name=flavor.get("original_name"),
        vcpus=flavor.get("vcpus"),
        fault=fault.get("message"),
        addresses=addresses(body.get("addresses") or {}),
        image_id=image.get("id") if isinstance(image, dict) else None,  # "" when booted from a volume
        key_name=body.get("key_name"),
        availability_zone=body.get("OS-EXT-AZ:availability_zone") or None,
        metadata=dict(body.get("metadata") or {}),
        tags=list(body.get("tags") or []),
        created=body.get("created"),
        updated=body.get("updated"),
    )


def addresses(by_network: Dict[str, List[Dict[str, Any]]]) -> Dict[str, List[Dict[str, Any]]]:
    """Nova's ``addresses`` per network: address, IP version, fixed or floating, MAC."""
    return {
        network: [
            {
                "address": entry.get("addr"),
                "version": entry.get("version"),
                "type": entry.get("OS-EXT-IPS:type"),
                "mac": entry.get("OS-EXT-IPS-MAC:mac_addr"),
            }
            for entry in entries
        ]
        for network, entries in by_network.items()
    }


def image(base: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """A Glance image as the seed's ``listimages`` shows it: id, name, links."""
    href = f"{base}/v2/images/{body['id']}"
    return {
        "id": body["id"],
        "name": body.get("name"),
        "links": [
            {"href": href, "rel": "self"},
            {"href": href, "rel": "alternate", "type": "application/vnd.openstack.image"},
        ],
    }


def flavor(body: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "id": body["id"],
        "name": body.get("name"),
        "vcpus": body.get("vcpus"),
        "ram": body.get("ram"),
        "disk": body.get("disk"),
        "public": body.get("os-flavor-access:is_public", True),
    }


def keypair(body: Dict[str, Any]) -> Dict[str, Any]:
    """One entry of ``GET /os-keypairs`` (each is wrapped in ``{"keypair": ...}``)."""
    inner = body.get("keypair", body)
    return {"name": inner.get("name"), "type": inner.get("type", "ssh"), "fingerprint": inner.get("fingerprint")}


def network(body: Dict[str, Any], subnets_by_id: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A Neutron network with its subnets' CIDRs (subnets it lists but the user cannot see are left out)."""
    return {
        "id": body["id"],
        "name": body.get("name"),
        "subnets": [
            {"id": sid, "name": subnets_by_id[sid].get("name"), "cidr": subnets_by_id[sid].get("cidr"),
             "ip_version": subnets_by_id[sid].get("ip_version")}
            for sid in body.get("subnets") or []
            if sid in subnets_by_id
        ],
        "shared": bool(body.get("shared")),
        "external": bool(body.get("router:external")),
    }


def security_group(body: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": body["id"], "name": body.get("name"), "description": body.get("description") or ""}


def zones(body: Dict[str, Any]) -> List[str]:
    """Names of the availability zones Nova reports as available."""
    return sorted(
        zone["zoneName"] for zone in body.get("availabilityZoneInfo") or []
        if (zone.get("zoneState") or {}).get("available")
    )


_LIMITS = {"instances": ("totalInstancesUsed", "maxTotalInstances"),
           "cores": ("totalCoresUsed", "maxTotalCores"),
           "ram": ("totalRAMUsed", "maxTotalRAMSize")}


def limits(body: Dict[str, Any]) -> Dict[str, Dict[str, Optional[int]]]:
    """Nova's absolute limits: used and maximum instances, cores and RAM (MB); -1 means unlimited."""
    absolute = (body.get("limits") or {}).get("absolute") or {}
    return {name: {"used": absolute.get(used), "max": absolute.get(maximum)}
            for name, (used, maximum) in _LIMITS.items()}
