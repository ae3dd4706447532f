"""The ``cloudmanagers agent`` command with one fault that only tests can switch on.

    python -m tests.support.ha_agent [options of `cloudmanagers agent`]

The HA fault tests need a request that kills every agent that takes it (a poison message), to
see the queue's delivery limit end it. No production code path may do that, so the fault lives
here, in the test tree: with ``CM_TEST_CRASH_VM=<name>`` in the environment, the process kills
itself with SIGKILL (no clean-up, no reply, no ack: what a segfault or the OOM killer does) when
the controller starts a request naming that VM. Everything else is the real command: the same
settings, the same controller, the same OpenStack driver.
"""

import os
import signal
import sys
from typing import Any, List, Optional

from cloudmanagers_plugin import cli
from cloudmanagers_plugin.controller import CloudmanagersController

CRASH_VARIABLE = "CM_TEST_CRASH_VM"


def arm_crash(vm_name: str) -> None:
    """Make the controller kill this process on any request naming ``vm_name``."""
    process = CloudmanagersController.process

    def crash_on_poison(self: CloudmanagersController, message: Any) -> Any:
        attributes = message.get("attributes") if isinstance(message, dict) else None
        if isinstance(attributes, dict) and attributes.get("name") == vm_name:
            os.kill(os.getpid(), signal.SIGKILL)
        return process(self, message)

    CloudmanagersController.process = crash_on_poison  # type: ignore[method-assign]


def main(argv: Optional[List[str]] = None) -> int:
    poison = os.environ.get(CRASH_VARIABLE, "")
    if poison:
        arm_crash(poison)
    return cli.main(["agent", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
