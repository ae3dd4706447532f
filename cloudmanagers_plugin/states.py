"""The one VM state-transition table.

A requested state (Nova's words or the 2013 plugin's legacy words, any case) is normalised to
one target; the target's row says which driver action reaches it from each current Nova status,
which statuses already satisfy it (nothing to do), and the status the VM settles in once the
action is done (what ``wait`` waits for). Idempotency, validation and waiting all read this one
table, as Ansible's ``server_action`` does, instead of an ``if`` ladder.

The actions are a closed set (``ServerAction``) that each driver maps once to its cloud's calls,
so a row can name no action a driver lacks. The few statuses the rest of the plugin reasons
about by name are here too, so that only this table and the drivers know Nova's words.
"""

from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Optional, Tuple

from .errors import BadRequest, Conflict

RUNNING = "ACTIVE"  # what a create waits for, and what ``protect_running`` protects
VERIFY_RESIZE = "VERIFY_RESIZE"  # a resized VM awaiting its confirmation (or revert)
RESIZING = "RESIZE"  # a resize under way, before VERIFY_RESIZE
RESIZABLE = ("ACTIVE", "SHUTOFF")  # where a resize may start, and where a finished one settles


class ServerAction(str, Enum):
    """One action on a VM's state; the value is the word the reply's ``vm_actions`` shows."""

    PAUSE = "pause"
    UNPAUSE = "unpause"
    SUSPEND = "suspend"
    RESUME = "resume"
    START = "start"
    STOP = "stop"
    REBOOT_SOFT = "reboot_soft"
    REBOOT_HARD = "reboot_hard"
    CONFIRM_RESIZE = "confirm_resize"
    REVERT_RESIZE = "revert_resize"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"

    def __str__(self) -> str:  # the word, in messages and logs, on every Python version
        return self.value


@dataclass(frozen=True)
class Transition:
    """How to reach one target state.

    A VM whose status already equals ``target`` (or one of ``equivalents``) needs no call (for
    REBOOT and HARD_REBOOT that means a reboot is already under way); ``settles_to`` is the
    status it ends in, and ``final_statuses`` every status ``wait`` accepts as done (a shelved VM
    is SHELVED, or SHELVED_OFFLOADED once Nova has freed its host). A target ``by_resize`` is
    reached by resizing the VM (the request's ``flavor``), by no state action.
    """

    target: str
    actions: Mapping[str, ServerAction]  # current Nova status -> the action that leaves it for ``target``
    settles_to: str = ""
    by_resize: bool = False
    equivalents: Tuple[str, ...] = ()

    @property
    def final_status(self) -> str:
        return self.settles_to or self.target

    @property
    def final_statuses(self) -> Tuple[str, ...]:
        return (self.final_status, *self.equivalents)

    def reached(self, status: str) -> bool:
        return status == self.target or status in self.equivalents


TRANSITIONS: Mapping[str, Transition] = {
    row.target: row
    for row in (
        Transition(
            "ACTIVE",
            {"PAUSED": ServerAction.UNPAUSE, "SUSPENDED": ServerAction.RESUME, "SHUTOFF": ServerAction.START,
             VERIFY_RESIZE: ServerAction.CONFIRM_RESIZE,
             "SHELVED": ServerAction.UNSHELVE, "SHELVED_OFFLOADED": ServerAction.UNSHELVE},
        ),
        Transition("PAUSED", {"ACTIVE": ServerAction.PAUSE}),
        Transition("SUSPENDED", {"ACTIVE": ServerAction.SUSPEND}),
        Transition("SHUTOFF", {"ACTIVE": ServerAction.STOP, "ERROR": ServerAction.STOP}),
        Transition("REBOOT", {"ACTIVE": ServerAction.REBOOT_SOFT}, settles_to="ACTIVE"),
        Transition(
            "SHELVED",
            {status: ServerAction.SHELVE for status in ("ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED")},
            equivalents=("SHELVED_OFFLOADED",),
        ),
        Transition(
            "HARD_REBOOT",
            {status: ServerAction.REBOOT_HARD
             for status in ("ACTIVE", "PAUSED", "SUSPENDED", "SHUTOFF", "ERROR", "REBOOT")},
            settles_to="ACTIVE",
        ),
        # The first step of the documented two-step resize: resize, and stop before the confirmation.
        Transition(VERIFY_RESIZE, {}, by_resize=True),
    )
}

# Every word a requester may send, lower-cased, to its target row.
ALIASES: Mapping[str, str] = {
    **{target.lower(): target for target in TRANSITIONS},
    "running": "ACTIVE",
    "resume": "ACTIVE",
    "start": "ACTIVE",
    "unpause": "ACTIVE",
    "paused": "PAUSED",
    "pause": "PAUSED",
    "suspend": "SUSPENDED",
    "shutdown": "SHUTOFF",
    "stop": "SHUTOFF",
    "stopped": "SHUTOFF",
    "rebooting": "REBOOT",
    "hard-reboot": "HARD_REBOOT",
    "shelve": "SHELVED",
    "shelved_offloaded": "SHELVED",
    "unshelve": "ACTIVE",
    "reboot_hard": "HARD_REBOOT",
}


def normalise(requested: str) -> Transition:
    """Return the row for a requested state word, or raise ``BadRequest`` listing the words."""
    target = ALIASES.get(requested.strip().lower())
    if target is None:
        legacy = ", ".join(word for word in ALIASES if word.upper() not in TRANSITIONS)
        raise BadRequest(f"unknown status '{requested}'; use {', '.join(TRANSITIONS)} (any case) or {legacy}")
    return TRANSITIONS[target]


def plan(current: str, requested: str, resizing: bool = False) -> Optional[ServerAction]:
    """The driver action that takes a VM from ``current`` to ``requested``; None when already there,
    or when the target is reached by the resize the request also asks for (``resizing``).

    Raises ``Conflict`` naming both states when no single action gets there from here, and
    ``BadRequest`` when the target needs a resize the request does not ask for.
    """
    row = normalise(requested)
    if row.reached(current):
        return None
    if row.by_resize:
        if resizing:
            return None
        raise BadRequest(
            f"status {row.target} is reached by resizing the VM: send 'flavor' (the new flavor) with it "
            f"(the VM is {current})"
        )
    action = row.actions.get(current)
    if action is None:
        allowed = ", ".join(sorted(row.actions))
        raise Conflict(
            f"cannot go from {current} to {row.target} (requested '{requested}'); "
            f"{row.target} can be reached from: {allowed}"
        )
    return action
