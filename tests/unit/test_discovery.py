"""Discovery reads (flavors, key pairs, networks, security groups, zones, limits) and the VM details keys."""

import pytest

from tests.support.controller import status_of
from tests.support.fakecloud import IMAGE_ID, NETWORKS, SECURITY_GROUPS

CM = "test_os"


def test_listflavors(call, cloud):
    status = status_of(call("read", listflavors="1"))
    assert set(status) == {"cloudmanagers", "url", "flavors"} and status["cloudmanagers"] == CM
    assert status["flavors"][0] == {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1, "public": True}
    assert [f["public"] for f in status["flavors"]] == [True, True, False]


def test_listkeys(call):
    keys = status_of(call("read", listkeys=True))["keys"]
    assert keys == [{"name": "tim-os", "type": "ssh", "fingerprint": "1e:2c:9b:56:79:4b:45:77:f9:ca:7a:98:2c:b0:d5:3c"}]


def test_listnetworks_with_subnets(call):
    networks = status_of(call("read", listnetworks="1"))["networks"]
    assert networks[0] == {"id": NETWORKS[0]["id"], "name": "private", "shared": True, "external": False,
                           "subnets": [{"id": NETWORKS[0]["subnets"][0], "name": "private-subnet",
                                        "cidr": "10.0.0.0/24", "ip_version": 4}]}
    assert networks[1]["name"] == "backend" and networks[1]["subnets"][0]["cidr"] == "10.1.0.0/24"


def test_listsecuritygroups(call):
    groups = status_of(call("read", listsecuritygroups="1"))["security_groups"]
    assert groups == [{"id": g["id"], "name": g["name"], "description": g["description"]} for g in SECURITY_GROUPS]


def test_listzones_only_available_ones(call):
    assert status_of(call("read", listzones="1"))["zones"] == ["nova"]


def test_limits(call, cloud):
    cloud.limits.update(totalInstancesUsed=3, totalCoresUsed=4, totalRAMUsed=2048)
    assert status_of(call("read", limits="1"))["limits"] == {
        "instances": {"used": 3, "max": 20}, "cores": {"used": 4, "max": -1}, "ram": {"used": 2048, "max": -1}}


def test_several_lists_in_one_read(call):
    status = status_of(call("read", listzones="1", listimages="1"))
    assert status["zones"] == ["nova"] and status["images"][0]["id"] == IMAGE_ID


def test_a_false_flag_is_not_a_list_request(call, cloud):
    cloud.add_server("vm")
    status = status_of(call("read", listflavors=False))
    assert "flavors" not in status and status["VMs"] == ["vm"]


@pytest.mark.parametrize("attribute,path,key", [
    ("listflavors", "/v2.1/flavors/detail", "flavors"),
    ("listkeys", "/v2.1/os-keypairs", "keys"),
    ("listsecuritygroups", "/v2.0/security-groups", "security_groups"),
])
def test_one_request_per_page_all_pages(call, cloud, attribute, path, key):
    cloud.page_size = 2
    cloud.security_groups += [{"id": f"sg-{i}", "name": f"sg{i}", "description": ""} for i in range(3)]
    cloud.keypairs += [{"name": f"k{i}", "type": "ssh", "fingerprint": "x"} for i in range(3)]
    status_of(call("read", listflavors="1"))  # authenticate; flavors cached
    before = len(cloud.requests())
    listed = status_of(call("read", **{attribute: "1"}))[key]
    pages = [r for r in cloud.requests()[before:] if r.split("?")[0] == f"GET {path}"]
    assert len(pages) == len(listed) // 2 + 1 == len(cloud.requests()) - before


def test_listnetworks_pages_networks_and_subnets(call, cloud):
    cloud.page_size = 1
    networks = status_of(call("read", listnetworks="1"))["networks"]
    assert [n["name"] for n in networks] == ["private", "backend"]
    assert all(len(n["subnets"]) == 1 for n in networks)
    assert cloud.count("neutron") == 3 + 3  # 2 items at 1 a page: 3 requests each (the last one empty)


def test_vm_details_new_keys_from_the_single_nova_response(call, cloud):
    cloud.add_server("haproxy", key_name="tim-os", metadata={"role": "lb"}, tags=["prod"])
    status_of(call("read", name="haproxy"))  # first read: flavors and console URL cached
    before = cloud.count("nova")
    status = status_of(call("read", name="haproxy"))
    assert cloud.count("nova") - before == 1
    assert status["vm_addresses"] == {"private": [
        {"address": "10.0.0.10", "version": 4, "type": "fixed", "mac": "fa:16:3e:00:00:00"}]}
    assert status["vm_image"] == IMAGE_ID and status["vm_key_name"] == "tim-os"
    assert status["vm_availability_zone"] == "nova"
    assert status["vm_metadata"] == {"role": "lb"} and status["vm_tags"] == ["prod"]
    assert status["vm_created"] == "2026-11-25T10:00:00Z" and status["vm_updated"] == "2026-11-25T10:00:05Z"


def test_vm_details_booted_from_volume_has_no_image(call, cloud):
    cloud.add_server("vol", image="", addresses={})
    status = status_of(call("read", name="vol"))
    assert status["vm_image"] is None and status["vm_addresses"] == {}
