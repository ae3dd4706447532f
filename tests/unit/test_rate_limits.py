"""429/503 with Retry-After: safe requests are retried within the section's timeout; a create is never
sent twice blindly; the error after the last try says it was rate-limited and for how long."""

import re
import time

import pytest

from cloudmanagers_plugin.drivers import ratelimit
from tests.support.controller import status_of
from tests.support.fakecloud import IMAGE_ID, NOVA, TOKEN

SHOW = rf"^{re.escape(NOVA)}/servers/[^/?]+$"
DETAIL = rf"^{re.escape(NOVA)}/servers/detail(\?.*)?$"
ACTION = rf"^{re.escape(NOVA)}/servers/[^/]+/action$"


@pytest.fixture
def slept(monkeypatch):
    """The delays the driver slept, without sleeping them: the monotonic clock jumps instead."""
    delays = []
    real_monotonic = time.monotonic

    def sleep(seconds):
        delays.append(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + sum(delays))
    return delays


def test_a_read_is_retried_after_the_delay_asked(call, cloud, slept):
    server = cloud.add_server("vm")
    status_of(call("read", name=server["id"]))  # warm: token, flavors, console URL
    cloud.throttle("GET", SHOW, cloud._show, times=2, retry_after="1")
    status = status_of(call("read", name=server["id"]))
    assert status["vm_name"] == "vm" and slept == [1.0, 1.0]
    assert len([r for r in cloud.requests() if r == f"GET /v2.1/servers/{server['id']}"]) == 1 + 3


def test_503_with_retry_after_is_retried_too(call, cloud, slept):
    cloud.add_server("vm")
    cloud.throttle("GET", DETAIL, cloud._detail, status=503, retry_after="2")
    assert status_of(call("read", name="vm"))["vm_name"] == "vm" and slept[:1] == [2.0]


def test_503_without_retry_after_is_an_error_at_once(call, cloud, slept):
    cloud.throttle("GET", DETAIL, cloud._detail, status=503, retry_after=None)
    assert "(HTTP 503)" in call("read", name="vm")["error"] and slept == []


def test_the_error_after_the_last_try_says_rate_limited_and_for_how_long(call, cloud, slept):
    cloud.throttle("GET", DETAIL, cloud._detail, times=100, retry_after="10")
    error = call("read", name="vm")["error"]
    assert "rate-limited the request to look up VM 'vm' (HTTP 429" in error
    assert "3 tries over 20.0 s" in error and "asks to retry after 10 s" in error
    assert slept == [10.0, 10.0]  # the section's timeout is 30 s: a 4th try would start after it


def test_a_delay_longer_than_the_timeout_is_not_waited(call, cloud, slept):
    cloud.throttle("GET", DETAIL, cloud._detail, times=1, retry_after="3600")
    error = call("read", name="vm")["error"]
    assert "1 try over" in error and "asks to retry after 3600 s" in error and slept == []


def test_an_http_date_retry_after(call, cloud, slept):
    cloud.add_server("vm")
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    cloud.throttle("GET", DETAIL, cloud._detail, retry_after=when)
    assert status_of(call("read", name="vm"))["vm_name"] == "vm"
    assert 3 <= slept[0] <= 6


def test_a_state_action_is_retried(call, cloud, slept):
    server = cloud.add_server("vm")
    cloud.throttle("POST", ACTION, cloud._action, then_status=202)
    status = status_of(call("update", name="vm", status="PAUSED"))
    assert status["vm_actions"] == ["pause"] and cloud.servers[server["id"]]["status"] == "PAUSED"
    assert slept == [1.0]


def test_a_create_is_resent_only_after_checking_it_did_not_happen(call, cloud, slept):
    cloud.throttle("POST", rf"^{re.escape(NOVA)}/servers$", cloud._create, then_status=202)
    status = status_of(call("create", name="new", flavor="1", image=IMAGE_ID))
    assert status["created"] is True and len(cloud.servers) == 1
    posts = [r for r in cloud.requests() if r == "POST /v2.1/servers"]
    lookups = [r for r in cloud.requests() if r.startswith("GET /v2.1/servers/detail")]
    # the name check before, the check before resending, and the look again for a racing create
    assert len(posts) == 2 and len(lookups) == 3


def test_a_create_that_happened_despite_the_429_is_not_sent_again(call, cloud, slept):
    def created_then_limited(request, context):
        cloud._create(request, context)  # the cloud made the VM, then a proxy answered 429
        context.status_code = 429
        context.headers["Retry-After"] = "1"
        return {"overLimit": {"code": 429, "message": "slow down"}}

    cloud.mocker.register_uri("POST", f"{NOVA}/servers", json=created_then_limited)
    status = status_of(call("create", name="new", flavor="1", image=IMAGE_ID))
    assert status["vm_id"] in cloud.servers and len(cloud.servers) == 1
    assert len([r for r in cloud.requests() if r == "POST /v2.1/servers"]) == 1


def test_a_snapshot_is_not_repeated(call, cloud, slept):
    cloud.add_server("vm")
    cloud.throttle("POST", ACTION, cloud._action)
    error = call("update", name="vm", snapshot="img")["error"]
    assert "rate-limited" in error and "not sent again" in error and slept == []
    assert len(cloud.images) == 1


def test_a_token_request_that_is_rate_limited_is_retried(call, cloud, slept):
    cloud.mocker.register_uri("POST", re.compile(r".*/v3/auth/tokens$"), [
        {"status_code": 429, "headers": {"Retry-After": "1"}, "json": {}},
        {"json": cloud._token, "status_code": 201, "headers": {"X-Subject-Token": TOKEN}}])
    cloud.add_server("vm")
    assert status_of(call("read", name="vm"))["vm_name"] == "vm" and slept[:1] == [1.0]


@pytest.mark.parametrize("value,expected", [("1", 1.0), (" 30 ", 30.0), ("soon", None), ("", None), (None, None),
                                            ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_values(value, expected):
    assert ratelimit.retry_after_seconds(value) == expected
