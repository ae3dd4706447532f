"""Effects that run once per request across processes: a create, the start of a resize, a
snapshot, state changes and deletes, redelivered to a second agent (a fresh controller, the same
cloud).

The answer cache of one agent dies with it; what a redelivery must find is on the VM itself.
"""

import json
import re

import pytest
import requests

from cloudmanagers_plugin import CloudmanagersController
from cloudmanagers_plugin.controller import CREATE_MARK, SNAPSHOT_MARK
from cloudmanagers_plugin.drivers.base import RESIZE_MARK
from cloudmanagers_plugin.request_context import running_request
from tests.support.controller import status_of
from tests.support.fakecloud import GLANCE, IMAGE_ID, NOVA, PASSWORD, TOKEN
from tests.support.seed_examples import EXAMPLES

CM = "test_os"
AGENT = "3a468145-1afc-40d3-baf5-3ba4c0fc3561"
CREATE = {"name": "web", "flavor": "1", "image": IMAGE_ID}


@pytest.fixture
def second(conf_path, cloud):
    """Another agent process: its own controller, drivers, sessions and caches, the same cloud."""
    return CloudmanagersController(config_path=conf_path, agent_uuid=AGENT)


def run(controller, action, correlation_id=None, redelivered=False, **attributes):
    message = {"collection": "cloudmanagers", "action": action, "id": CM, "attributes": attributes}
    with running_request(correlation_id, redelivered):
        return controller.process(message)


def posts(cloud, path_end):
    return [r for r in cloud.mocker.request_history if r.method == "POST" and r.path.endswith(path_end)]


def actions(cloud):
    return [next(iter(json.loads(r.body))) for r in posts(cloud, "/action")]


# -- create -------------------------------------------------------------------------------------


def test_a_create_records_its_correlation_id_in_the_same_post(controller, cloud):
    status_of(run(controller, "create", "corr-1", **CREATE, metadata={"owner": "ops"}))
    (body,) = cloud.created_bodies
    assert body["server"]["metadata"] == {"owner": "ops", CREATE_MARK: "corr-1"}
    nova = [r for r in cloud.mocker.request_history if r.port == 8774 and "/flavors" not in r.path]
    assert len(nova) == 3  # name check, POST, look again: the record costs no request


def test_without_a_correlation_id_nothing_is_recorded(controller, cloud):
    status_of(run(controller, "create", None, **CREATE))
    assert "metadata" not in cloud.created_bodies[0]["server"]


def test_a_redelivered_create_answers_the_first_success_from_another_process(controller, second, cloud):
    first = status_of(run(controller, "create", "corr-1", **CREATE))
    again = status_of(run(second, "create", "corr-1", redelivered=True, **CREATE))
    assert again["created"] is True and again["vm_id"] == first["vm_id"]
    assert set(again) == set(first) and EXAMPLES["create"][2] <= set(again)  # the seed's keys, and ours
    assert len(cloud.created_bodies) == 1 and len(cloud.servers) == 1


def test_the_next_agent_finds_the_vm_of_a_post_whose_answer_was_lost(controller, second, cloud):
    """The first agent sent the POST and died before answering: the VM is there, with the id."""
    vm = cloud.add_server("web", status="BUILD", metadata={CREATE_MARK: "corr-1"})
    again = status_of(run(second, "create", "corr-1", redelivered=True, **CREATE))
    assert again == {"cloudmanager": CM, "created": True, "vm_name": "web", "vm_status": "BUILD", "vm_id": vm["id"]}
    assert cloud.created_bodies == []


def test_a_redelivered_create_with_wait_waits_as_the_first_did(second, cloud):
    vm = cloud.add_server("web", status="BUILD", metadata={CREATE_MARK: "corr-1"})
    polls = iter(["BUILD", "ACTIVE"])
    cloud.mocker.get(f"{NOVA}/servers/{vm['id']}",
                     json=lambda request, context: {"server": dict(vm, status=next(polls, "ACTIVE"))})
    second.driver(CM).first_poll = 0.01
    again = status_of(run(second, "create", "corr-1", **CREATE, wait=5))
    assert again["vm_status"] == "ACTIVE" and cloud.created_bodies == []


def test_another_request_for_an_existing_name_still_gets_already_exists(controller, second, cloud):
    status_of(run(controller, "create", "corr-1", **CREATE))
    error = run(second, "create", "corr-2", **CREATE)["error"]
    assert "already exists" in error and len(cloud.created_bodies) == 1


def test_a_redelivery_whose_vm_lost_the_race_answers_already_exists_again(second, cloud):
    """Its first run created a VM after another request's and is deleting it: "already exists"."""
    older = cloud.add_server("web", metadata={CREATE_MARK: "corr-other"}, created="2026-11-25T10:00:00Z")
    cloud.add_server("web", status="BUILD", metadata={CREATE_MARK: "corr-1"}, created="2026-11-25T10:00:01Z")
    error = run(second, "create", "corr-1", redelivered=True, **CREATE)["error"]
    assert f"already exists on '{CM}' (id {older['id']})" in error and cloud.created_bodies == []


def test_two_runs_of_one_create_at_once_leave_one_vm_and_both_succeed(second, cloud):
    """A redelivery to a second agent while the first still runs: both pass the name check, both
    create; the second's VM is the newer, it deletes it and answers the first one's VM."""
    first_run = cloud.add_server("web", status="BUILD", metadata={CREATE_MARK: "corr-1"},
                                 created="2026-11-25T09:00:00Z")  # the second run's VM is newer
    name_query = re.compile(rf"^{re.escape(NOVA)}/servers/detail\?name=")
    cloud.mocker.get(name_query, [{"json": {"servers": []}}, {"json": cloud._detail}])  # the race: not seen yet
    again = status_of(run(second, "create", "corr-1", redelivered=True, **CREATE))
    assert again["created"] is True and again["vm_id"] == first_run["id"]
    assert list(cloud.servers) == [first_run["id"]] and len(cloud.created_bodies) == 1


# -- the two-step resize ------------------------------------------------------------------------


def test_the_request_that_starts_a_resize_is_recorded_before_it(controller, cloud):
    vm = cloud.add_server("haproxy")
    status_of(run(controller, "update", "corr-1", name="haproxy", flavor="2"))
    assert vm["metadata"][RESIZE_MARK] == "corr-1"
    nova = [f"{r.method} {r.path.rsplit('/', 1)[1]}" for r in cloud.mocker.request_history
            if r.port == 8774 and "/flavors" not in r.path]
    assert nova == ["GET detail", "POST metadata", "POST action"]  # look-up, record, resize


def test_a_redelivered_resize_start_does_not_confirm_and_a_new_message_does(controller, second, cloud):
    vm = cloud.add_server("haproxy")
    first = status_of(run(controller, "update", "corr-1", name="haproxy", flavor="2"))
    again = status_of(run(second, "update", "corr-1", redelivered=True, name="haproxy", flavor="2"))
    assert vm["status"] == "VERIFY_RESIZE" and actions(cloud) == ["resize"]
    assert again["vm_actions"] == first["vm_actions"] == ["resize"] and again["vm_flavor"] == "2"
    confirmed = status_of(run(second, "update", "corr-2", name="haproxy", flavor="2"))
    assert confirmed["vm_actions"] == ["confirm_resize"] and actions(cloud) == ["resize", "confirmResize"]
    assert vm["status"] == "ACTIVE"
    late = status_of(run(controller, "update", "corr-1", redelivered=True, name="haproxy", flavor="2"))
    assert late["vm_actions"] == ["resize"] and actions(cloud) == ["resize", "confirmResize"]


def test_a_redelivered_resize_that_asked_to_confirm_confirms(second, cloud):
    """``confirm: true`` is one request asking for both steps: its redelivery finishes them."""
    old = cloud.add_server("old")["flavor"]
    cloud.add_server("haproxy", status="VERIFY_RESIZE", flavor="2", metadata={RESIZE_MARK: "corr-1"},
                     previous=(old, "ACTIVE"))
    status = status_of(run(second, "update", "corr-1", name="haproxy", flavor="2", confirm=True, wait=5))
    assert status["vm_actions"] == ["resize", "confirm_resize"] and actions(cloud) == ["confirmResize"]


def test_a_resize_recorded_but_not_started_is_not_run_again(second, cloud):
    """Killed between the record and the resize: the redelivery says so, at most once."""
    cloud.add_server("haproxy", metadata={RESIZE_MARK: "corr-1"})
    error = run(second, "update", "corr-1", redelivered=True, name="haproxy", flavor="2")["error"]
    assert "resize to m1.small was recorded" in error and "send a new request" in error
    assert actions(cloud) == []


def test_a_legacy_resize_is_not_recorded(controller, cloud):
    vm = cloud.add_server("haproxy")
    status_of(run(controller, "update", None, name="haproxy", flavor="2"))
    assert vm["metadata"] == {} and posts(cloud, "/metadata") == []
    assert len([r for r in cloud.mocker.request_history if r.port == 8774 and "/flavors" not in r.path]) == 2


# -- snapshots ----------------------------------------------------------------------------------

SNAPSHOT = {"name": "haproxy", "snapshot": "haproxy-backup"}
IMAGES = re.compile(rf"^{re.escape(GLANCE)}/v2/images(\?.*)?$")


def openstack_requests(cloud):
    return [f"{r.method} {r.path}{'?' + r.query if r.query else ''}" for r in cloud.mocker.request_history
            if r.port != 5000]


def marked(cloud, correlation_id):
    return [image["id"] for image in cloud.images if image.get(SNAPSHOT_MARK) == correlation_id]


def test_a_snapshot_records_its_correlation_id_on_its_image_at_no_extra_request(controller, cloud):
    vm = cloud.add_server("haproxy")
    status = status_of(run(controller, "update", "corr-1", **SNAPSHOT))
    (image,) = [image for image in cloud.images if image["id"] == status["image_id"]]
    assert image[SNAPSHOT_MARK] == "corr-1" and image["name"] == "haproxy-backup"
    assert status == {"cloudmanager": CM, "vm_name": "haproxy", "vm_id": vm["id"], "image_id": image["id"],
                      "image_status": "active", "vm_status": "ACTIVE", "vm_actions": ["snapshot"]}
    # look-up, createImage, look again (which also gives the status): no Glance look-up before it
    assert openstack_requests(cloud) == [
        "GET /v2.1/servers/detail?name=%5ehaproxy%24", f"POST /v2.1/servers/{vm['id']}/action",
        f"GET /v2/images?{SNAPSHOT_MARK}=corr-1&limit=1000&owner=p1"]


def test_a_legacy_snapshot_is_not_recorded_and_costs_what_it_did(controller, cloud):
    vm = cloud.add_server("haproxy")
    status = status_of(run(controller, "update", None, **SNAPSHOT))
    assert SNAPSHOT_MARK not in cloud.images[-1] and status["image_status"] == "active"
    assert openstack_requests(cloud) == [
        "GET /v2.1/servers/detail?name=%5ehaproxy%24", f"POST /v2.1/servers/{vm['id']}/action",
        f"GET /v2/images/{status['image_id']}"]


def test_a_redelivered_snapshot_answers_the_first_image_and_takes_none(controller, second, cloud):
    cloud.add_server("haproxy")
    first = status_of(run(controller, "update", "corr-1", **SNAPSHOT))
    cloud.mocker.reset_mock()
    again = status_of(run(second, "update", "corr-1", redelivered=True, **SNAPSHOT))
    assert again == first and cloud.snapshots_made == 1 and marked(cloud, "corr-1") == [first["image_id"]]
    assert openstack_requests(cloud) == ["GET /v2.1/servers/detail?name=%5ehaproxy%24",
                                         f"GET /v2/images?{SNAPSHOT_MARK}=corr-1&limit=1000&owner=p1"]


def test_a_redelivered_snapshot_with_wait_waits_for_the_first_image(second, cloud):
    """The first agent died after createImage, before its reply: the image is still saving."""
    cloud.add_server("haproxy")
    image = cloud.add_image("haproxy-backup", status="saving", **{SNAPSHOT_MARK: "corr-1"})
    statuses = iter(["saving", "active"])
    cloud.mocker.get(f"{GLANCE}/v2/images/{image['id']}",
                     json=lambda request, context: dict(image, status=next(statuses, "active")))
    second.driver(CM).first_poll = 0.01
    again = status_of(run(second, "update", "corr-1", redelivered=True, **SNAPSHOT, wait=5))
    assert again["image_id"] == image["id"] and again["image_status"] == "active" and cloud.snapshots_made == 0


def test_a_redelivery_whose_first_run_took_no_snapshot_takes_it(second, cloud):
    cloud.add_server("haproxy")
    status = status_of(run(second, "update", "corr-1", redelivered=True, **SNAPSHOT))
    assert marked(cloud, "corr-1") == [status["image_id"]] and cloud.snapshots_made == 1
    assert len(openstack_requests(cloud)) == 4  # look-up of the VM, of the image, createImage, look again


def test_another_request_takes_another_snapshot(controller, second, cloud):
    cloud.add_server("haproxy")
    first = status_of(run(controller, "update", "corr-1", **SNAPSHOT))
    other = status_of(run(second, "update", "corr-2", **SNAPSHOT))
    assert other["image_id"] != first["image_id"] and cloud.snapshots_made == 2
    assert (marked(cloud, "corr-1"), marked(cloud, "corr-2")) == ([first["image_id"]], [other["image_id"]])


def test_two_runs_of_one_snapshot_at_once_leave_one_image_and_both_answer_it(controller, second, cloud):
    """The broker redelivered the request to a second agent while the first still ran: the
    redelivery looks, finds nothing yet, and snapshots just before the first run's createImage
    arrives. The first run's image is the newer: it deletes it and answers the other."""
    cloud.add_server("haproxy")
    redelivery = []

    def the_other_run_first():
        cloud.before_snapshot = None
        redelivery.append(status_of(run(second, "update", "corr-1", redelivered=True, **SNAPSHOT)))

    cloud.before_snapshot = the_other_run_first
    first = status_of(run(controller, "update", "corr-1", **SNAPSHOT))
    assert first == redelivery[0] and marked(cloud, "corr-1") == [first["image_id"]]
    assert cloud.snapshots_made == 2 and [r.method for r in cloud.mocker.request_history].count("DELETE") == 1


def test_a_run_whose_image_is_the_oldest_keeps_it_and_leaves_the_other_to_its_run(controller, cloud):
    """Each run deletes only what it made: the newer image is the other run's to delete."""
    cloud.add_server("haproxy")
    newer = []

    def listed_after_the_other_run_made_one(request, context):
        if not newer:
            newer.append(cloud.add_image("haproxy-backup", **{SNAPSHOT_MARK: "corr-1"}))
        return cloud._images(request, context)

    cloud.mocker.get(IMAGES, json=listed_after_the_other_run_made_one)
    status = status_of(run(controller, "update", "corr-1", **SNAPSHOT))
    assert status["image_id"] != newer[0]["id"] and len(marked(cloud, "corr-1")) == 2
    assert "DELETE" not in [r.method for r in cloud.mocker.request_history]


def test_a_snapshot_refused_while_its_other_run_snapshots_answers_that_image(second, cloud):
    """Nova takes one snapshot of a VM at a time: the run that meets the 409 answers the other's image."""
    cloud.add_server("haproxy", **{"OS-EXT-STS:task_state": "image_snapshot"})
    image = cloud.add_image("haproxy-backup", status="queued", **{SNAPSHOT_MARK: "corr-1"})
    status = status_of(run(second, "update", "corr-1", **SNAPSHOT))
    assert (status["image_id"], status["image_status"]) == (image["id"], "queued") and cloud.snapshots_made == 0


def test_a_snapshot_refused_for_another_requests_snapshot_is_still_an_error(second, cloud):
    cloud.add_server("haproxy", **{"OS-EXT-STS:task_state": "image_snapshot"})
    cloud.add_image("haproxy-backup", **{SNAPSHOT_MARK: "corr-other"})
    error = run(second, "update", "corr-1", **SNAPSHOT)["error"]
    assert "(409)" in error and "task_state image_snapshot" in error and cloud.snapshots_made == 0


def test_a_glance_that_refuses_the_property_filter_gives_a_clear_error(second, cloud):
    cloud.add_server("haproxy")
    cloud.mocker.get(IMAGES, status_code=400, json={"message": "Invalid filter", "code": "400 Bad Request"})
    error = run(second, "update", "corr-1", redelivered=True, **SNAPSHOT)["error"]
    assert f"rejected the request to look up images by their property {SNAPSHOT_MARK} (400)" in error
    assert cloud.snapshots_made == 0  # not taken when its earlier run cannot be looked for


def test_a_glance_unreachable_after_the_snapshot_names_the_image_made(second, cloud):
    cloud.add_server("haproxy")
    cloud.mocker.get(IMAGES, exc=requests.exceptions.ConnectionError("Connection refused"))
    reply = run(second, "update", "corr-1", **SNAPSHOT)
    (made,) = marked(cloud, "corr-1")
    assert reply["error"].startswith(f"the snapshot image {made} was made, but looking for another run's image")
    assert "cannot connect to OpenStack" in reply["error"]
    assert PASSWORD not in str(reply) and TOKEN not in str(reply)


# -- state changes and deletes ------------------------------------------------------------------


@pytest.mark.parametrize("requested, reached", [("PAUSED", "PAUSED"), ("shutdown", "SHUTOFF"),
                                                ("SUSPENDED", "SUSPENDED"), ("SHELVED", "SHELVED_OFFLOADED")])
def test_a_redelivered_state_change_in_another_process_makes_no_call(controller, second, cloud, requested, reached):
    vm = cloud.add_server("haproxy")
    status_of(run(controller, "update", "corr-1", name="haproxy", status=requested))
    calls = len(actions(cloud))
    again = status_of(run(second, "update", "corr-1", redelivered=True, name="haproxy", status=requested))
    assert again["vm_actions"] == [] and again["vm_status"] == vm["status"] == reached
    assert len(actions(cloud)) == calls == 1


def _started_elsewhere_first(cloud):
    """Nova's action endpoint as it answers a run that lost the race: the earlier run of the same
    request (in the agent that lost its broker connection, not its process) started the VM just
    before, so this start meets a 409."""
    def answer(request, context):
        (server,) = cloud.servers.values()
        server["status"] = "ACTIVE"
        return cloud._action(request, context)

    cloud.mocker.register_uri("POST", re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/action$"), json=answer)


def test_a_redelivered_state_change_that_meets_its_earlier_run_under_way_succeeds(second, cloud):
    vm = cloud.add_server("haproxy", status="SHUTOFF")
    _started_elsewhere_first(cloud)
    again = status_of(run(second, "update", "corr-1", redelivered=True, name="haproxy", status="ACTIVE", wait=30))
    assert again["vm_actions"] == [] and again["vm_status"] == vm["status"] == "ACTIVE"


def test_a_first_delivery_that_meets_a_409_is_still_an_error(second, cloud):
    cloud.add_server("haproxy", status="SHUTOFF")
    _started_elsewhere_first(cloud)
    error = run(second, "update", "corr-1", name="haproxy", status="ACTIVE")["error"]
    assert "(409)" in error and "vm_state active" in error


def test_a_redelivered_state_change_refused_for_another_reason_is_still_an_error(second, cloud):
    cloud.add_server("haproxy", status="SHUTOFF")
    cloud.mocker.register_uri("POST", re.compile(rf"^{re.escape(NOVA)}/servers/[^/]+/action$"), status_code=409,
                              json={"conflictingRequest": {"code": 409, "message": "locked"}})
    error = run(second, "update", "corr-1", redelivered=True, name="haproxy", status="ACTIVE")["error"]
    assert "(409)" in error and "locked" in error


def test_a_redelivered_delete_of_a_vm_already_gone_succeeds_without_a_call(controller, second, cloud):
    vm = cloud.add_server("haproxy")
    first = status_of(run(controller, "delete", "corr-1", name="haproxy"))
    again = status_of(run(second, "delete", "corr-1", redelivered=True, name="haproxy"))
    assert again["deleted"] is True and again["vm_status"] == "DELETED" and set(again) == set(first)
    assert [r.method for r in cloud.mocker.request_history].count("DELETE") == 1 and vm["id"] not in cloud.servers


def test_a_first_delivery_delete_of_no_vm_is_still_an_error(second, cloud):
    assert "no VM named 'ghost'" in run(second, "delete", "corr-1", name="ghost")["error"]
