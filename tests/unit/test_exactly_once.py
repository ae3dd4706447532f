"""Effects that run once per request across processes: a create, the start of a resize, state
changes and deletes, redelivered to a second agent (a fresh controller, the same cloud).

The answer cache of one agent dies with it; what a redelivery must find is on the VM itself.
"""

import json
import re

import pytest

from cloudmanagers_plugin import CloudmanagersController
from cloudmanagers_plugin.controller import CREATE_MARK
from cloudmanagers_plugin.drivers.base import RESIZE_MARK
from cloudmanagers_plugin.request_context import running_request
from tests.support.controller import status_of
from tests.support.fakecloud import IMAGE_ID, NOVA
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
