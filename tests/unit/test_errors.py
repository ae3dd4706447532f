"""Every OpenStack failure becomes one clear error reply; tokens are reused and renewed."""

import logging
import re

import pytest
import requests

from cloudmanagers_plugin import CloudmanagersController
from tests.support.controller import status_of
from tests.support.fakecloud import GLANCE, IMAGE_ID, KEYSTONE, NOVA, PASSWORD, TOKEN


def _nova_error(cloud, code, message):
    names = {403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest", 500: "computeFault",
             503: "serviceUnavailable"}
    cloud.mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers/detail.*"), status_code=code,
                     json={names[code]: {"code": code, "message": message}})


@pytest.mark.parametrize("code,message,words", [
    (403, "Policy doesn't allow os_compute_api:servers:detail to be performed.", "not allowed to look up VM"),
    (404, "The resource could not be found.", "not found (404)"),
    (409, "Cannot 'resize' instance while it is in task_state deleting", "(409)"),
    (500, "Unexpected API Error.", "OpenStack failed to look up VM 'haproxy' (HTTP 500)"),
    (503, "Service Unavailable", "(HTTP 503)"),
])
def test_nova_http_errors(call, cloud, code, message, words):
    _nova_error(cloud, code, message)
    error = call("read", name="haproxy")["error"]
    assert words in error and message in error and "Request-ID" not in error


def test_wrong_password_is_a_clear_error(call, cloud):
    cloud.password = "something-else"
    error = call("read", name="haproxy")["error"]
    assert "refused the credentials (401)" in error and "check username, password" in error
    assert PASSWORD not in error


def test_keystone_unreachable(call, cloud):
    cloud.mocker.post(f"{KEYSTONE}/v3/auth/tokens", exc=requests.exceptions.ConnectionError("refused"))
    error = call("read", name="x")["error"]
    assert "cannot connect to OpenStack" in error and "keystone_base_url" in error


def _dropped_once(cloud, method, pattern, handler, status=200):
    """The first matching request meets a kept-alive connection the server has just closed."""
    dropped = requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end closed "
                                                  "connection without response'))")
    cloud.mocker.register_uri(method, re.compile(pattern), [{"exc": dropped}, {"json": handler, "status_code": status}])


def test_a_read_on_a_dropped_connection_is_sent_once_more(call, cloud):
    server = cloud.add_server("vm")
    _dropped_once(cloud, "GET", rf"^{re.escape(NOVA)}/servers/[^/?]+$", cloud._show)
    assert status_of(call("read", name=server["id"]))["vm_name"] == "vm"


def test_an_idempotent_action_on_a_dropped_connection_is_sent_once_more(call, cloud):
    server = cloud.add_server("vm")
    _dropped_once(cloud, "POST", rf"^{re.escape(NOVA)}/servers/[^/]+/action$", cloud._action, status=202)
    assert status_of(call("update", name="vm", status="PAUSED"))["vm_actions"] == ["pause"]
    assert cloud.servers[server["id"]]["status"] == "PAUSED"


def test_a_create_on_a_dropped_connection_is_not_resent(call, cloud):
    _dropped_once(cloud, "POST", rf"^{re.escape(NOVA)}/servers$", cloud._create, status=202)
    assert "cannot connect to OpenStack while trying to create VM 'new'" in call(
        "create", name="new", flavor="1", image=IMAGE_ID)["error"]
    assert len([r for r in cloud.requests() if r == "POST /v2.1/servers"]) == 1 and not cloud.servers


def test_a_service_that_stays_unreachable_fails_after_the_second_try(call, cloud):
    cloud.mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers.*"), exc=requests.exceptions.ConnectionError("refused"))
    assert "cannot connect to OpenStack while trying to look up VM 'x'" in call("read", name="x")["error"]
    assert len([r for r in cloud.requests() if r.startswith("GET /v2.1/servers/detail")]) == 2


def test_nova_timeout(call, cloud):
    cloud.mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers.*"), exc=requests.exceptions.ReadTimeout)
    assert "did not answer within 30 s" in call("read", name="x")["error"]


def test_glance_error(call, cloud):
    cloud.mocker.get(re.compile(rf"^{re.escape(GLANCE)}/v2/images.*"), status_code=500, text="boom")
    assert "failed to list images (HTTP 500)" in call("read", listimages=1)["error"]


def test_agent_keeps_serving_after_errors(call, cloud):
    cloud.add_server("haproxy")
    for _ in range(3):
        assert "error" in call("read", name="ghost")
    assert status_of(call("read", name="haproxy"))["vm_name"] == "haproxy"


def test_one_token_for_many_messages(call, cloud):
    cloud.add_server("haproxy")
    for _ in range(50):
        status_of(call("read", name="haproxy"))
    assert cloud.tokens_issued == 1 and cloud.count("keystone") == 1


def test_reauthenticates_once_on_401(call, cloud):
    cloud.add_server("haproxy")
    status_of(call("read", name="haproxy"))
    responses = [{"status_code": 401, "json": {"unauthorized": {"code": 401, "message": "expired"}}}]
    original = cloud._detail
    cloud.mocker.get(re.compile(rf"^{re.escape(NOVA)}/servers/detail.*"),
                     responses + [{"json": original}])
    assert status_of(call("read", name="haproxy"))["vm_name"] == "haproxy"
    assert cloud.tokens_issued == 2


def test_config_change_of_a_section_gets_a_new_session(controller, conf_path, cloud):
    controller.driver("test_os").authenticate()
    with open(conf_path, "a") as handle:
        handle.write("timeout = 12\n")
    driver = controller.driver("test_os")
    assert driver.config.timeout == 12
    driver.authenticate()
    assert cloud.tokens_issued == 2


def test_secrets_never_logged_or_replied(tmp_path, conf_path, cloud, caplog):
    """Passwords and tokens appear in no log line (at DEBUG) and no reply, success or failure."""
    caplog.set_level(logging.DEBUG)
    controller = CloudmanagersController(config_path=conf_path)
    cloud.add_server("haproxy")
    replies = []
    for attributes in ({"name": "haproxy"}, {"listimages": 1}, {"name": "nope"}, {}):
        replies.append(controller.process({"collection": "cloudmanagers", "action": "read", "id": "test_os",
                                           "attributes": attributes}))
    cloud.password = "changed"
    controller.driver("test_os")._session.invalidate()
    replies.append(controller.process({"collection": "cloudmanagers", "action": "read", "id": "test_os",
                                       "attributes": {"name": "haproxy"}}))
    text = caplog.text + repr(replies) + repr(controller.config.get("test_os"))
    assert "/v3/auth/tokens" in caplog.text and "X-Auth-Token" in caplog.text  # DEBUG HTTP logs were on
    assert PASSWORD not in text and TOKEN not in text

