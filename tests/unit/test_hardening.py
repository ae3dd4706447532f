"""The controller's defences against hostile values and repeated effects (issue 15), on the faked cloud."""

import json
import logging
import re

import pytest

from tests.support.controller import status_of
from tests.support.fakecloud import IMAGE_ID, NOVA

CM = "test_os"


# -- defect 5: what a reply echoes ---------------------------------------------------------------


def test_a_huge_action_is_echoed_as_a_short_marked_prefix(controller):
    reply = controller.process({"collection": "cloudmanagers", "action": "a" * 10_000_000, "id": CM})
    assert "unknown action 'aaa" in reply["error"] and "10000000 characters" in reply["error"]
    assert len(json.dumps(reply)) < 1000


def test_a_huge_id_is_refused_and_echoed_short(controller):
    reply = controller.process({"collection": "cloudmanagers", "action": "read", "id": "c" * 1_000_000})
    assert "'id' is too long (1000000 characters; at most 255)" in reply["error"]
    assert len(json.dumps(reply)) < 1000


@pytest.mark.parametrize("attribute", ["name", "flavor", "image", "key"])
def test_an_overlong_attribute_is_refused_without_being_echoed(call, attribute):
    attributes = {"name": "vm", "flavor": "1", "image": IMAGE_ID, attribute: "v" * 5_000_000}
    reply = call("create", **attributes)
    assert f"attribute '{attribute}' is too long (5000000 characters; at most 255)" in reply["error"]
    assert len(json.dumps(reply)) < 1000


# -- defect 8: two creates of one name racing on two agents -------------------------------------


def racing_create(cloud, mocker, rival_created):
    """Make another VM of the same name appear while this request's create is under way."""
    create = cloud._create

    def racing(request, context):
        body = create(request, context)
        name = json.loads(request.body)["server"]["name"]
        cloud.servers[body["server"]["id"]]["created"] = "2026-11-25T12:00:05Z"
        cloud.add_server(name, created=rival_created)
        return body

    mocker.post(f"{NOVA}/servers", json=racing)


def test_a_racing_create_that_made_the_newer_vm_deletes_it_and_says_already_exists(call, cloud):
    racing_create(cloud, cloud.mocker, rival_created="2026-11-25T12:00:04Z")
    reply = call("create", name="web", flavor="1", image=IMAGE_ID)
    assert "a VM named 'web' already exists" in reply["error"] and "no VM was created" in reply["error"]
    assert [s["created"] for s in cloud.servers.values() if s["name"] == "web"] == ["2026-11-25T12:00:04Z"]


def test_a_racing_create_that_made_the_older_vm_keeps_it(call, cloud):
    racing_create(cloud, cloud.mocker, rival_created="2026-11-25T12:00:06Z")
    status = status_of(call("create", name="web", flavor="1", image=IMAGE_ID))
    assert cloud.servers[status["vm_id"]]["name"] == "web"
    assert len([s for s in cloud.servers.values() if s["name"] == "web"]) == 2  # the rival deletes its own


def test_created_in_the_same_second_the_ids_decide(call, cloud):
    racing_create(cloud, cloud.mocker, rival_created="2026-11-25T12:00:05Z")
    reply = call("create", name="web", flavor="1", image=IMAGE_ID)
    survivors = sorted(s["id"] for s in cloud.servers.values() if s["name"] == "web")
    if "error" in reply:  # ours had the larger id: deleted, the rival stays
        assert len(survivors) == 1 and "already exists" in reply["error"]
    else:  # ours had the smaller id: kept; the rival's request deletes its own
        assert len(survivors) == 2 and survivors[0] == reply["status"]["vm_id"]


# -- defect 9: secrets at debug level -------------------------------------------------------------


SECRET = "c2VjcmV0LXVzZXItZGF0YS1uZXZlci1sb2dnZWQ="  # base64 of secret-user-data-never-logged


@pytest.fixture
def agent_logging(caplog):
    """The agent's log set-up at [log] level = debug, as ``cloudmanagers agent`` applies it."""
    from cloudmanagers_plugin.logsafety import LIBRARY_LOGGERS, RedactSecrets, limit_library_logging

    caplog.set_level(logging.DEBUG)

    def apply(libraries):
        limit_library_logging(logging.DEBUG, logging.getLevelName(libraries), logging.getLogger().handlers)

    yield apply
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    for handler in logging.getLogger().handlers:
        for found in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
            handler.removeFilter(found)


def test_at_debug_the_libraries_stay_at_info(call, caplog, agent_logging):
    agent_logging("INFO")
    status_of(call("create", name="vm", flavor="1", image=IMAGE_ID, user_data=SECRET))
    assert SECRET not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith(("novaclient", "keystoneauth")) and r.levelno < logging.INFO]


def test_library_debug_asked_for_still_masks_user_data_and_admin_pass(call, caplog, agent_logging):
    agent_logging("DEBUG")
    status_of(call("create", name="vm", flavor="1", image=IMAGE_ID, user_data=SECRET))
    assert "REQ: curl" in caplog.text  # the libraries did log the bodies
    assert SECRET not in caplog.text and '"user_data": "***"' in caplog.text


def test_redaction_covers_the_shapes_bodies_are_logged_in():
    from cloudmanagers_plugin.logsafety import redact

    for text in ['{"user_data": "abc\\"def", "x": 1}', "{'adminPass': 'abc'}", '"adminPass":"abc"', "user_data=abc&x=1"]:
        assert "abc" not in redact(text), text


# -- defect 11: hostile values get a clear error naming the attribute -----------------------------


HOSTILE = {
    "lone surrogate": "\ud800",
    "surrogate inside": "vm\udfffname",
    "10**400": 10 ** 400,
    "-10**400": -(10 ** 400),
    "huge float": 1e308,
    "infinity": float("inf"),
    "nan": float("nan"),
    "object": {"a": {"b": [1]}},
    "array": [1, "a"],
    "true": True,
    "NUL": "\x00",
    "5 MB": "v" * 5_000_000,
}
VALID = {"name": "vm", "flavor": "1", "image": IMAGE_ID, "status": "PAUSED", "wait": 1}
ATTRIBUTES = {
    "create": ("name", "flavor", "image", "key", "user_data", "wait", "networks", "security_groups",
               "availability_zone", "metadata", "tags", "config_drive", "description", "server_group"),
    "update": ("name", "status", "flavor", "wait", "confirm", "revert", "metadata", "tags", "rename", "snapshot"),
    "delete": ("name", "wait", "force"),
    "read": ("name", "listimages", "listflavors", "consolelog"),
}
CASES = [(action, attribute, label) for action, attributes in ATTRIBUTES.items()
         for attribute in attributes for label in HOSTILE]


@pytest.mark.parametrize("action,attribute,label", CASES)
def test_hostile_values_never_cause_an_internal_error(controller, cloud, action, attribute, label):
    cloud.add_server("vm")
    attributes = {key: VALID[key] for key in ("name", "flavor", "image") if action == "create" or key == "name"}
    if action == "create":
        attributes["name"] = "new-vm"
    if action == "update":
        attributes["status"] = "PAUSED"
    attributes[attribute] = HOSTILE[label]
    reply = controller.process({"collection": "cloudmanagers", "action": action, "id": CM, "attributes": attributes})
    error = reply.get("error", "")
    assert "internal error" not in error
    json.dumps(reply)  # the agent can always encode it
    if error:
        stem = attribute.rstrip("s").replace("_", "[ _-]")
        assert re.search(stem, error, re.IGNORECASE), error
        assert len(error) < 600


# -- defect 12: a redelivered reboot does not run again ------------------------------------------


def reboots(cloud):
    return [r for r in cloud.mocker.request_history if r.method == "POST" and r.path.endswith("/action")
            and "reboot" in (r.body or "")]


@pytest.mark.parametrize("status", ["REBOOT", "HARD_REBOOT"])
def test_a_redelivered_reboot_runs_once(call, cloud, status):
    from cloudmanagers_plugin.request_context import running_request

    server = cloud.add_server("vm")
    with running_request("corr-1"):
        status_of(call("update", name="vm", status=status))
        assert server["metadata"]["cloudmanagers_reboot_request"] == "corr-1"
        again = status_of(call("update", name="vm", status=status))  # the same request, redelivered
    assert len(reboots(cloud)) == 1 and again["vm_actions"]
    with running_request("corr-2"):  # a new request reboots again
        status_of(call("update", name="vm", status=status))
    assert len(reboots(cloud)) == 2


def test_without_a_correlation_id_a_reboot_is_not_recorded(call, cloud):
    """The legacy synapse agent passes no id: its reboots run as before, without a metadata write."""
    server = cloud.add_server("vm")
    status_of(call("update", name="vm", status="REBOOT"))
    status_of(call("update", name="vm", status="REBOOT"))
    assert len(reboots(cloud)) == 2 and server["metadata"] == {}


def test_a_reboot_nova_will_not_record_still_runs(call, cloud):
    """Nova refuses metadata in ERROR (409): a hard reboot out of ERROR must still happen."""
    cloud.add_server("vm", status="ERROR")
    cloud.mocker.post(re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/metadata$"), status_code=409,
                      json={"conflictingRequest": {"code": 409, "message": "Cannot update metadata in vm_state error"}})
    from cloudmanagers_plugin.request_context import running_request

    with running_request("corr-1"):
        status = status_of(call("update", name="vm", status="HARD_REBOOT"))
    assert status["vm_actions"] == ["reboot_hard"] and len(reboots(cloud)) == 1
