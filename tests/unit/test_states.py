"""The transition table: every row, every source state, idempotency and refusals."""

import pytest

from cloudmanagers_plugin import states
from cloudmanagers_plugin.errors import BadRequest, Conflict

NOVA_STATUSES = ["ACTIVE", "PAUSED", "SUSPENDED", "SHUTOFF", "VERIFY_RESIZE", "ERROR", "REBOOT", "HARD_REBOOT",
                 "BUILD", "RESIZE"]

ROWS = [(target, current, action) for target, row in states.TRANSITIONS.items()
        for current, action in row.actions.items()]


@pytest.mark.parametrize("target,current,action", ROWS)
def test_every_row_plans_its_action(target, current, action):
    assert states.plan(current, target) == action


@pytest.mark.parametrize("target", list(states.TRANSITIONS))
def test_already_in_target_needs_no_call(target):
    assert states.plan(target, target) is None


@pytest.mark.parametrize("target,current", [
    (target, current) for target, row in states.TRANSITIONS.items() if not row.by_resize
    for current in NOVA_STATUSES if current not in row.actions and current != target])
def test_impossible_transition_names_both_states(target, current):
    with pytest.raises(Conflict) as err:
        states.plan(current, target)
    assert current in str(err.value) and target in str(err.value)


@pytest.mark.parametrize("word,current,action", [
    ("running", "PAUSED", "unpause"), ("running", "SUSPENDED", "resume"), ("running", "SHUTOFF", "start"),
    ("resume", "PAUSED", "unpause"), ("Active", "VERIFY_RESIZE", "confirm_resize"),
    ("paused", "ACTIVE", "pause"), ("SUSPENDED", "ACTIVE", "suspend"), ("shutdown", "ACTIVE", "stop"),
    ("SHUTOFF", "ACTIVE", "stop"), ("rebooting", "ACTIVE", "reboot_soft"), ("REBOOT", "ACTIVE", "reboot_soft"),
    ("hard_reboot", "SHUTOFF", "reboot_hard"), ("HARD_REBOOT", "ACTIVE", "reboot_hard"),
])
def test_legacy_and_nova_words_in_any_case(word, current, action):
    assert states.plan(current, word) == action


def test_reboot_settles_to_active():
    assert states.normalise("REBOOT").final_status == "ACTIVE"
    assert states.normalise("paused").final_status == "PAUSED"


def test_unknown_word_lists_the_accepted_ones():
    with pytest.raises(BadRequest) as err:
        states.normalise("flying")
    assert "flying" in str(err.value) and "ACTIVE" in str(err.value) and "shutdown" in str(err.value)


@pytest.mark.parametrize("current", [status for status in NOVA_STATUSES if status != "VERIFY_RESIZE"])
def test_verify_resize_needs_a_flavor(current):
    """VERIFY_RESIZE is reached by resizing: with the request's flavor there is nothing else to do."""
    with pytest.raises(BadRequest) as err:
        states.plan(current, "VERIFY_RESIZE")
    assert "'flavor'" in str(err.value) and current in str(err.value)
    assert states.plan(current, "verify_resize", resizing=True) is None
