"""The driver boundary: every state action of the transition table reaches its one Nova call,
and the driver's expiring caches (console URLs, image ids) keep their promises."""

import json

import pytest

from cloudmanagers_plugin import states
from cloudmanagers_plugin.drivers.expiring import ExpiringCache
from cloudmanagers_plugin.states import ServerAction

# Each state action -> (a status Nova accepts it from, the body Nova's server action API receives).
NOVA_BODIES = {
    ServerAction.PAUSE: ("ACTIVE", {"pause": None}),
    ServerAction.UNPAUSE: ("PAUSED", {"unpause": None}),
    ServerAction.SUSPEND: ("ACTIVE", {"suspend": None}),
    ServerAction.RESUME: ("SUSPENDED", {"resume": None}),
    ServerAction.START: ("SHUTOFF", {"os-start": None}),
    ServerAction.STOP: ("ACTIVE", {"os-stop": None}),
    ServerAction.REBOOT_SOFT: ("ACTIVE", {"reboot": {"type": "SOFT"}}),
    ServerAction.REBOOT_HARD: ("SHUTOFF", {"reboot": {"type": "HARD"}}),
    ServerAction.CONFIRM_RESIZE: ("VERIFY_RESIZE", {"confirmResize": None}),
    ServerAction.REVERT_RESIZE: ("VERIFY_RESIZE", {"revertResize": None}),
    ServerAction.SHELVE: ("ACTIVE", {"shelve": None}),
    ServerAction.UNSHELVE: ("SHELVED_OFFLOADED", {"unshelve": None}),
}


def test_the_table_names_only_state_actions_and_uses_each():
    used = {action for row in states.TRANSITIONS.values() for action in row.actions.values()}
    assert all(isinstance(action, ServerAction) for action in used)
    assert used == set(ServerAction) - {ServerAction.REVERT_RESIZE}  # revert: the resize protocol's alone


@pytest.mark.parametrize("action", list(ServerAction))
def test_every_state_action_sends_its_nova_call(controller, cloud, action):
    status, body = NOVA_BODIES[action]
    server = cloud.add_server("vm", status=status, previous=({"original_name": "m1.tiny"}, "ACTIVE"))
    controller.driver("test_os").set_state(server["id"], action)
    sent = [r for r in cloud.mocker.request_history if r.path.endswith("/action")]
    assert len(sent) == 1 and json.loads(sent[0].body) == body


def test_the_action_word_in_replies_and_messages():
    assert f"{ServerAction.CONFIRM_RESIZE}" == str(ServerAction.CONFIRM_RESIZE) == "confirm_resize"
    assert json.dumps([ServerAction.PAUSE.value]) == '["pause"]'


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_expires_after_its_ttl():
    clock = Clock()
    cache = ExpiringCache(ttl=10, size=4, clock=clock)
    cache.put("vm", "url")
    clock.now += 9.9
    assert cache.get("vm") == "url"
    clock.now += 0.1
    assert cache.get("vm") is None and len(cache) == 0


def test_a_full_cache_drops_its_oldest_entries():
    cache = ExpiringCache(ttl=10, size=3, clock=Clock())
    for key in "abcd":
        cache.put(key, key.upper())
    assert len(cache) == 3
    assert cache.get("a") is None and [cache.get(key) for key in "bcd"] == ["B", "C", "D"]


def test_put_again_renews_and_discard_forgets():
    clock = Clock()
    cache = ExpiringCache(ttl=10, size=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    clock.now += 5
    cache.put("a", 3)  # renewed, and now the newest: "b" goes first
    cache.put("c", 4)
    assert cache.get("a") == 3 and cache.get("b") is None
    clock.now += 9
    assert cache.get("a") == 3
    cache.discard("a")
    cache.discard("never there")
    assert cache.get("a") is None and cache.get("c") == 4
