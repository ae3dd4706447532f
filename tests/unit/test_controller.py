"""Every action of the controller against the faked OpenStack, and every seed example."""

import base64

import pytest

from cloudmanagers_plugin import CloudmanagersController
from tests.support.controller import LEGACY_SECTION, status_of, write_config
from tests.support.fakecloud import IMAGE_ID
from tests.support.seed_examples import EXAMPLES, assert_seed_reply, example

CM = "test_os"


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_seed_example_keeps_the_documented_keys(name, controller, cloud):
    cloud.add_server("haproxy")  # ACTIVE, as in the documentation, delete included
    reply = controller.process(example(name, CM))
    assert_seed_reply(name, reply, CM)
    assert reply["uuid"] == "3a468145-1afc-40d3-baf5-3ba4c0fc3561"


def test_list_cloud_managers_skips_general(call):
    assert status_of(call("read", "")) == {"cloudmanagers": ["test_os"]}


def test_list_vms_reads_every_page(controller, cloud):
    cloud.page_size = 3
    for i in range(7):
        cloud.add_server(f"vm{i}")
    status = status_of(controller.process(example("list VMs", CM)))
    assert status["VMs"] == [f"vm{i}" for i in range(7)]
    assert status["url"] == "http://127.0.0.1"
    assert cloud.count("nova") == 3  # 3 + 3 + 1: one request per page


def test_vm_details(call, cloud):
    server = cloud.add_server("haproxy", status="SHUTOFF", flavor="3")
    status = status_of(call("read", name="haproxy"))
    assert status["vm_status"] == "SHUTOFF"
    assert status["vm_vcpus"] == 2  # whatever the state, unlike the 2013 plugin
    assert status["vm_flavor"] == "3" and status["vm_flavor_name"] == "m1.medium"
    assert status["vm_id"] == server["id"]
    assert status["vm_vnc_port"] == "" and status["vm_console_url"] is None
    assert status["vm_console_unavailable"] == "the VM is SHUTOFF"


def test_vm_details_console_from_nova(call, cloud):
    cloud.add_server("haproxy")
    status = status_of(call("read", name="haproxy"))
    assert status["vm_vnc_port"] == "6080"
    assert status["vm_console_url"].startswith("http://127.0.0.1:6080/vnc_auto.html")
    assert "vm_console_unavailable" not in status


def test_vm_details_when_the_cloud_has_no_console(call, cloud):
    cloud.console = False
    cloud.add_server("haproxy")
    status = status_of(call("read", name="haproxy"))
    assert status["vm_vnc_port"] == "" and status["vm_console_url"] is None
    assert "VNC is disabled" in status["vm_console_unavailable"]


def test_vm_details_by_id(call, cloud):
    server = cloud.add_server("haproxy")
    assert status_of(call("read", name=server["id"]))["vm_name"] == "haproxy"


def test_name_lookup_is_exact_not_a_regex(call, cloud):
    cloud.add_server("web-1")
    cloud.add_server("web-10")
    cloud.add_server("a.b")
    assert status_of(call("read", name="web-1"))["vm_name"] == "web-1"
    assert "no VM named 'a*b'" in call("read", name="a*b")["error"]
    assert "no VM named 'axb'" in call("read", name="axb")["error"]


def test_duplicate_names_are_an_error_listing_ids(call, cloud):
    first, second = cloud.add_server("twin"), cloud.add_server("twin")
    error = call("read", name="twin")["error"]
    assert first["id"] in error and second["id"] in error


def test_missing_vm(call):
    assert "no VM named 'ghost'" in call("read", name="ghost")["error"]


def test_list_images_from_glance(call):
    status = status_of(call("read", listimages="1"))
    assert status["cloudmanagers"] == CM
    assert status["images"][0]["id"] == IMAGE_ID and status["images"][0]["name"] == "cirros-fake"
    assert {link["rel"] for link in status["images"][0]["links"]} == {"self", "alternate"}


# -- create ------------------------------------------------------------------------------------


def test_create_sends_decoded_user_data_once(call, cloud):
    script = "#!/bin/sh\necho hi\n"
    status = status_of(call("create", name="vm", flavor="m1.small", image="cirros-fake", key="k",
                            user_data=base64.b64encode(script.encode()).decode()))
    assert status == {"cloudmanager": CM, "created": True, "vm_name": "vm", "vm_status": "BUILD",
                      "vm_id": status["vm_id"]}
    server = cloud.servers[status["vm_id"]]
    assert base64.b64decode(server["user_data"]).decode() == script
    assert server["key_name"] == "k" and server["flavor"]["original_name"] == "m1.small"


def test_create_flavor_as_json_number(call, cloud):
    assert status_of(call("create", name="vm", flavor=1, image=IMAGE_ID))["created"] is True


def test_create_refuses_an_existing_name_and_makes_nothing(call, cloud):
    cloud.add_server("vm")
    assert "already exists" in call("create", name="vm", flavor="1", image=IMAGE_ID)["error"]
    assert len(cloud.servers) == 1


def test_create_with_wait_reports_nova_fault(call, cloud):
    cloud.next_status["doomed"] = "ERROR"
    error = call("create", name="doomed", flavor="1", image=IMAGE_ID, wait=5)["error"]
    assert "went to ERROR" in error and "No valid host was found" in error


def test_create_with_wait_returns_active(call):
    assert status_of(call("create", name="vm", flavor="1", image=IMAGE_ID, wait=5))["vm_status"] == "ACTIVE"


@pytest.mark.parametrize("attributes,words", [
    ({"flavor": "1", "image": IMAGE_ID}, "'name' is required"),
    ({"name": "", "flavor": "1", "image": IMAGE_ID}, "'name' must not be empty"),
    ({"name": ["x"], "flavor": "1", "image": IMAGE_ID}, "'name' must be a string, got an array"),
    ({"name": "x", "image": IMAGE_ID}, "'flavor' is required"),
    ({"name": "x", "flavor": "1"}, "'image' is required"),
    ({"name": "x", "flavor": "99", "image": IMAGE_ID}, "no flavor '99'"),
    ({"name": "x", "flavor": "1", "image": "nosuch"}, "no image named 'nosuch'"),
    ({"name": "x", "flavor": "1", "image": IMAGE_ID, "user-data": "not base64!"}, "must be base64"),
    ({"name": "x", "flavor": "1", "image": IMAGE_ID, "wait": "soon"}, "'wait' must be a number"),
    ({"name": "x", "flavor": "1", "image": IMAGE_ID, "wait": -1}, "'wait' must be between"),
])
def test_create_bad_input(call, cloud, attributes, words):
    reply = call("create", **attributes)
    assert words in reply["error"] and reply["status"] == {}
    assert not cloud.servers


def test_create_unknown_image_id_is_nova_400(call):
    error = call("create", name="x", flavor="1", image="6f2b9c86-0a1e-4c7e-9b7e-1f0a2b3c4d5e")["error"]
    assert "(400)" in error and "could not be found" in error


# -- update: state -----------------------------------------------------------------------------

STATE_CASES = [
    ("ACTIVE", "PAUSED", "pause", "PAUSED"), ("PAUSED", "ACTIVE", "unpause", "ACTIVE"),
    ("ACTIVE", "SUSPENDED", "suspend", "SUSPENDED"), ("SUSPENDED", "resume", "resume", "ACTIVE"),
    ("ACTIVE", "shutdown", "stop", "SHUTOFF"), ("SHUTOFF", "running", "start", "ACTIVE"),
    ("ACTIVE", "REBOOT", "reboot_soft", "ACTIVE"), ("SHUTOFF", "HARD_REBOOT", "reboot_hard", "ACTIVE"),
    ("PAUSED", "running", "unpause", "ACTIVE"), ("ERROR", "SHUTOFF", "stop", "SHUTOFF"),
]


@pytest.mark.parametrize("current,requested,action,final", STATE_CASES)
def test_status_change(call, cloud, current, requested, action, final):
    server = cloud.add_server("haproxy", status=current)
    status = status_of(call("update", name="haproxy", status=requested, wait=5))
    assert status["vm_actions"] == [action] and status["vm_status"] == final
    assert cloud.servers[server["id"]]["status"] == final


def test_status_change_without_wait_answers_at_once(call, cloud):
    cloud.add_server("haproxy")
    status = status_of(call("update", name="haproxy", status="shutdown"))
    assert status["vm_actions"] == ["stop"]
    assert cloud.count("nova") == 2  # look-up + action


def test_already_in_state_makes_no_call(call, cloud):
    cloud.add_server("haproxy", status="PAUSED")
    status = status_of(call("update", name="haproxy", status="paused"))
    assert status["vm_actions"] == [] and status["vm_status"] == "PAUSED"
    assert not [r for r in cloud.requests() if "/action" in r]


def test_impossible_transition_names_current_and_requested(call, cloud):
    cloud.add_server("haproxy", status="SHUTOFF")
    error = call("update", name="haproxy", status="PAUSED")["error"]
    assert "SHUTOFF" in error and "PAUSED" in error


def test_update_needs_something_to_do(call, cloud):
    cloud.add_server("haproxy")
    assert "needs 'status' and/or 'flavor'" in call("update", name="haproxy")["error"]


def test_update_unknown_status_word(call, cloud):
    cloud.add_server("haproxy")
    assert "unknown status 'sleeping'" in call("update", name="haproxy", status="sleeping")["error"]


# -- update: resize ----------------------------------------------------------------------------


def test_seed_two_step_resize(call, cloud):
    server = cloud.add_server("haproxy")
    first = status_of(call("update", name="haproxy", flavor="2"))
    assert first["vm_actions"] == ["resize"] and first["vm_flavor"] == "2"
    assert cloud.servers[server["id"]]["status"] == "VERIFY_RESIZE"
    second = status_of(call("update", name="haproxy", flavor="2"))
    assert second["vm_actions"] == ["confirm_resize"]
    assert cloud.servers[server["id"]]["status"] == "ACTIVE"
    third = status_of(call("update", name="haproxy", flavor="2"))
    assert third["vm_actions"] == []


def test_resize_with_confirm_in_one_message(call, cloud):
    server = cloud.add_server("haproxy", status="SHUTOFF")
    status = status_of(call("update", name="haproxy", flavor="m1.medium", confirm=True, wait=5))
    assert status["vm_actions"] == ["resize", "confirm_resize"] and status["vm_status"] == "SHUTOFF"
    assert cloud.servers[server["id"]]["flavor"]["original_name"] == "m1.medium"


def test_resize_revert(call, cloud):
    server = cloud.add_server("haproxy")
    call("update", name="haproxy", flavor="2")
    status = status_of(call("update", name="haproxy", revert=True))
    assert status["vm_actions"] == ["revert_resize"]
    assert cloud.servers[server["id"]]["flavor"]["original_name"] == "m1.tiny"


def test_resize_on_auto_confirming_cloud_counts_as_done(call, cloud):
    cloud.auto_confirm = True
    cloud.add_server("haproxy")
    status = status_of(call("update", name="haproxy", flavor="2", confirm=True, wait=5))
    assert status["vm_actions"] == ["resize"] and status["vm_status"] == "ACTIVE"


def test_resize_refused_in_wrong_state(call, cloud):
    cloud.add_server("haproxy", status="PAUSED")
    assert "while it is PAUSED" in call("update", name="haproxy", flavor="2")["error"]


def test_confirm_of_another_flavor_is_refused(call, cloud):
    cloud.add_server("haproxy")
    call("update", name="haproxy", flavor="2")
    assert "awaits confirmation of a resize to m1.small" in call("update", name="haproxy", flavor="3")["error"]


def test_status_active_confirms_a_pending_resize(call, cloud):
    server = cloud.add_server("haproxy")
    call("update", name="haproxy", flavor="2")
    assert status_of(call("update", name="haproxy", status="ACTIVE"))["vm_actions"] == ["confirm_resize"]
    assert cloud.servers[server["id"]]["status"] == "ACTIVE"


def test_status_verify_resize_with_flavor_resizes_and_stops_there(call, cloud):
    """The seed's update statuses include VERIFY_RESIZE: the first step of the two-step resize."""
    server = cloud.add_server("haproxy")
    status = status_of(call("update", name="haproxy", status="VERIFY_RESIZE", flavor="2", wait=5))
    assert status["vm_actions"] == ["resize"] and status["vm_status"] == "VERIFY_RESIZE"
    assert status["vm_flavor"] == "2"
    again = status_of(call("update", name="haproxy", status="VERIFY_RESIZE", flavor="2"))
    assert again["vm_actions"] == [] and again["vm_status"] == "VERIFY_RESIZE"  # not confirmed
    assert cloud.servers[server["id"]]["status"] == "VERIFY_RESIZE"


def test_status_verify_resize_alone(call, cloud):
    cloud.add_server("haproxy")
    error = call("update", name="haproxy", status="VERIFY_RESIZE")["error"]
    assert "send 'flavor'" in error and "ACTIVE" in error
    call("update", name="haproxy", flavor="2")
    actions_before = len([r for r in cloud.requests() if "/action" in r])
    status = status_of(call("update", name="haproxy", status="verify_resize"))
    assert status["vm_actions"] == [] and status["vm_status"] == "VERIFY_RESIZE"
    assert len([r for r in cloud.requests() if "/action" in r]) == actions_before  # already there: no call


def test_status_verify_resize_refuses_confirm(call, cloud):
    cloud.add_server("haproxy")
    error = call("update", name="haproxy", status="VERIFY_RESIZE", flavor="2", confirm=True)["error"]
    assert "stops before the confirmation" in error


# -- delete ------------------------------------------------------------------------------------


def test_delete_of_a_running_vm_as_documented(controller, cloud):
    """The seed deletes `haproxy` while it is ACTIVE and answers deleted: True, vm_status: ACTIVE."""
    cloud.add_server("haproxy")
    status = status_of(controller.process(example("delete", CM)))
    assert status["deleted"] is True and status["vm_status"] == "ACTIVE"
    assert not cloud.servers


@pytest.fixture
def protected_call(tmp_path, cloud):
    """call() on a section that opts in to protect_running."""
    path = write_config(tmp_path / "protected.conf", LEGACY_SECTION + "protect_running = true\n")
    controller = CloudmanagersController(config_path=path)
    return lambda action, **attributes: controller.process(
        {"collection": "cloudmanagers", "action": action, "id": CM, "attributes": attributes})


def test_protect_running_refuses_an_active_vm(protected_call, cloud):
    cloud.add_server("haproxy")
    error = protected_call("delete", name="haproxy")["error"]
    assert "protect_running" in error and "force: true" in error
    assert len(cloud.servers) == 1


@pytest.mark.parametrize("force", [True, "true", 1, "yes"])
def test_protect_running_yields_to_force(protected_call, cloud, force):
    cloud.add_server("haproxy")
    status = status_of(protected_call("delete", name="haproxy", force=force))
    assert status["deleted"] is True and status["vm_status"] == "ACTIVE"
    assert not cloud.servers


def test_protect_running_lets_a_stopped_vm_go(protected_call, cloud):
    cloud.add_server("haproxy", status="SHUTOFF")
    assert status_of(protected_call("delete", name="haproxy"))["deleted"] is True


def test_delete_stopped_vm_and_wait_until_gone(call, cloud):
    cloud.add_server("haproxy", status="SHUTOFF")
    assert status_of(call("delete", name="haproxy", wait=5))["vm_status"] == "DELETED"


def test_delete_bad_force_value(call, cloud):
    cloud.add_server("haproxy")
    assert "'force' must be true or false" in call("delete", name="haproxy", force="maybe")["error"]


# -- envelope and request validation -----------------------------------------------------------


def test_ping_and_monitor_attribute(controller):
    reply = controller.process({"collection": "cloudmanagers", "action": "ping"})
    assert reply["status"] == {} and "error" not in reply
    reply = controller.process({"collection": "cloudmanagers", "action": "read", "attributes": {"monitor": False}})
    assert reply["status"] == {"cloudmanagers": ["test_os"]}


@pytest.mark.parametrize("message,words", [
    ({"collection": "cloudmanagers", "action": "listimages", "id": CM}, "unknown action 'listimages'"),
    ({"collection": "cloudmanagers", "id": CM}, "no 'action'"),
    ({"collection": "cloudmanagers", "action": "read", "id": CM, "attributes": [1]}, "'attributes' must be an object"),
    ({"collection": "cloudmanagers", "action": "read", "id": CM, "attributes": None}, "'attributes' must be an object"),
    ({"collection": "cloudmanagers", "action": "read", "id": 5}, "'id' must be a string"),
    ({"collection": "cloudmanagers", "action": "read", "id": "nowhere"}, "unknown cloud manager 'nowhere'"),
    ({"collection": "cloudmanagers", "action": "create", "id": ""}, "'id' must name a cloud manager"),
    ({"collection": "other", "action": "read"}, "serves 'cloudmanagers', not 'other'"),
    (["not", "a", "dict"], "must be a JSON object"),
])
def test_bad_requests_get_an_error_reply(controller, message, words):
    reply = controller.process(message)
    assert words in reply["error"]
    assert reply["status"] == {} and reply["msg_type"] == "response" and reply["uuid"]


def test_unexpected_exception_still_replies(controller, monkeypatch):
    monkeypatch.setattr(controller.config, "section_ids", lambda: 1 / 0)
    reply = controller.process({"collection": "cloudmanagers", "action": "read"})
    assert reply["error"] == "internal error (ZeroDivisionError); see the agent's log"


def test_wait_that_runs_out_says_where_the_vm_is(call, cloud):
    cloud.next_status["slow"] = "BUILD"  # this fake VM never leaves BUILD
    error = call("create", name="slow", flavor="1", image=IMAGE_ID, wait=0.5)["error"]
    assert "VM slow is still BUILD after 0.5 s; expected ACTIVE" in error
