"""Create options: networks, security groups, zone, metadata, tags, config drive, description, server group."""

import pytest

from cloudmanagers_plugin import CloudmanagersController
from tests.support.controller import LEGACY_SECTION, status_of, write_config
from tests.support.fakecloud import IMAGE_ID, NETWORKS, SECURITY_GROUPS

BASE = {"name": "vm", "flavor": "1", "image": IMAGE_ID}


def sent(cloud):
    """The one create body Nova received."""
    assert len(cloud.created_bodies) == 1, cloud.created_bodies
    return cloud.created_bodies[0]


def test_every_option_reaches_nova(call, cloud):
    status = status_of(call("create", **BASE, networks=["private", NETWORKS[1]["id"]],
                            security_groups=["web", SECURITY_GROUPS[0]["id"]], availability_zone="nova",
                            metadata={"role": "web", "owner": "ops"}, tags=["prod", "blue"], config_drive=True,
                            description="front end", server_group="spread"))
    body = sent(cloud)
    server = body["server"]
    assert server["networks"] == [{"uuid": NETWORKS[0]["id"]}, {"uuid": NETWORKS[1]["id"]}]
    assert server["security_groups"] == [{"name": SECURITY_GROUPS[1]["id"]}, {"name": SECURITY_GROUPS[0]["id"]}]
    assert server["availability_zone"] == "nova" and server["metadata"] == {"role": "web", "owner": "ops"}
    assert server["tags"] == ["prod", "blue"] and server["config_drive"] is True
    assert server["description"] == "front end"
    assert body["os:scheduler_hints"] == {"group": cloud.server_groups[0]["id"]}
    assert status["created"] is True


@pytest.mark.parametrize("networks,expected", [
    ("auto", "auto"), ("none", "none"), ("NONE", "none"),
    ("private,backend", [{"uuid": NETWORKS[0]["id"]}, {"uuid": NETWORKS[1]["id"]}]),
])
def test_networks_words_and_comma_list(call, cloud, networks, expected):
    status_of(call("create", **BASE, networks=networks))
    assert sent(cloud)["server"]["networks"] == expected


def test_networks_default_to_the_section(call, cloud):
    status_of(call("create", **BASE))
    assert sent(cloud)["server"]["networks"] == "auto"


def test_section_networks_may_be_names(tmp_path, cloud):
    path = write_config(tmp_path / "cm.conf", LEGACY_SECTION + "networks = backend\n")
    reply = CloudmanagersController(config_path=path).process(
        {"collection": "cloudmanagers", "action": "create", "id": "test_os", "attributes": BASE})
    status_of(reply)
    assert sent(cloud)["server"]["networks"] == [{"uuid": NETWORKS[1]["id"]}]


@pytest.mark.parametrize("attributes,words", [
    ({"networks": ["private", "nosuch"]}, "no network 'nosuch' (available: backend, private)"),
    ({"security_groups": ["web", "ghost"]}, "no security group 'ghost' (available: default, web)"),
    ({"availability_zone": "mars"}, "no availability zone 'mars' (available: nova)"),
    ({"server_group": "packed"}, "no server group 'packed' (available: spread)"),
    ({"networks": 5}, "'networks' must be a list of names or ids (strings), got a number"),
    ({"networks": ["private", 3]}, "'networks' must be a list of names or ids"),
    ({"networks": []}, "'networks' must name at least one"),
    ({"networks": ["auto", "private"]}, "'auto' and 'none' stand alone"),
    ({"security_groups": {"a": 1}}, "'security_groups' must be a list of names or ids"),
    ({"metadata": ["a"]}, "'metadata' must be an object of strings, got an array"),
    ({"metadata": {"a": "1", "b": 2, "c": None}}, "not a string: b, c"),
    ({"tags": "x", "networks": "ghost"}, "no network 'ghost'"),
    ({"tags": [1]}, "'tags' must be a list of names or ids"),
    ({"config_drive": "maybe"}, "'config_drive' must be true or false"),
    ({"description": ["x"]}, "'description' must be a string, got an array"),
    ({"availability_zone": {}}, "'availability_zone' must be a string, got an object"),
    ({"server_group": 7.5}, "'server_group' must be a string, got a number"),
])
def test_bad_options_create_nothing(call, cloud, attributes, words):
    reply = call("create", **BASE, **attributes)
    assert words in reply["error"] and reply["status"] == {}
    assert not cloud.created_bodies and not cloud.servers


def test_a_name_is_looked_up_once_then_cached(call, cloud):
    status_of(call("create", **BASE, networks=["backend"], security_groups=["web"]))
    before = cloud.count("neutron")
    status_of(call("create", **{**BASE, "name": "vm2"}, networks=["backend"], security_groups=["web"]))
    assert cloud.count("neutron") == before == 2  # one network list, one security group list


def test_a_new_name_is_listed_again_once(call, cloud):
    status_of(call("create", **BASE, networks=["backend"]))
    cloud.networks.append({"id": "5e1f0a7e-0000-4000-8000-000000000009", "name": "fresh", "subnets": [],
                           "shared": False, "router:external": False})
    status_of(call("create", **{**BASE, "name": "vm2"}, networks=["fresh"]))
    assert cloud.created_bodies[-1]["server"]["networks"] == [{"uuid": "5e1f0a7e-0000-4000-8000-000000000009"}]
    assert cloud.count("neutron") == 2


def test_ids_are_not_looked_up(call, cloud):
    status_of(call("create", **BASE, networks=[NETWORKS[1]["id"]], security_groups=[SECURITY_GROUPS[1]["id"]]))
    assert cloud.count("neutron") == 0


def test_duplicate_names_are_a_conflict(call, cloud):
    cloud.security_groups.append({"id": "6a0c0d7e-0000-4000-8000-00000000000f", "name": "web", "description": ""})
    error = call("create", **BASE, security_groups=["web"])["error"]
    assert "several security groups are named 'web'" in error and "use the id" in error
    assert not cloud.created_bodies


def test_tags_need_microversion_2_52(tmp_path, cloud):
    path = write_config(tmp_path / "cm.conf", LEGACY_SECTION + "compute_api_version = 2.47\n")
    reply = CloudmanagersController(config_path=path).process(
        {"collection": "cloudmanagers", "action": "create", "id": "test_os", "attributes": {**BASE, "tags": ["a"]}})
    assert "'tags' at create need compute_api_version 2.52 or later (the section has 2.47)" in reply["error"]
    assert not cloud.created_bodies


def test_metadata_and_tags_show_in_details(call, cloud):
    status_of(call("create", **BASE, metadata={"role": "db"}, tags=["prod"]))
    details = status_of(call("read", name="vm"))
    assert details["vm_metadata"] == {"role": "db"} and details["vm_tags"] == ["prod"]
