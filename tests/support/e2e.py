"""What the end-to-end tests share: the harness that drives the real pieces, and Nova's own view.

``tools/harness.py`` is shared with the demo; the helpers here read a server straight from Nova
(independently of the plugin) so a test can check what the plugin said against what happened.
"""

import time

from novaclient import exceptions as nova_exc

from tools import harness

__all__ = ["harness", "real_status", "settle"]


def real_status(nova, server_id):
    """(status, task_state, flavor name) of a server as Nova itself reports it; DELETED when gone."""
    try:
        server = nova.servers.get(server_id)
    except nova_exc.NotFound:
        return "DELETED", None, None
    return server.status, getattr(server, "OS-EXT-STS:task_state"), server.flavor["original_name"]


def settle(nova, server_id, expect=None, timeout=90):
    """Wait until Nova has no task under way on the server (and, given ``expect``, shows that status).

    Returns (status, flavor name). ``expect`` matters where Nova works without a task state,
    e.g. a confirmed resize stays VERIFY_RESIZE for a moment with no task.
    """
    deadline = time.monotonic() + timeout
    while True:
        status, task, flavor = real_status(nova, server_id)
        if not task and status not in ("BUILD", "RESIZE", "REBOOT", "HARD_REBOOT") and expect in (None, status):
            return status, flavor
        assert time.monotonic() < deadline, f"server {server_id} still {status}/{task}"
        time.sleep(0.3)
