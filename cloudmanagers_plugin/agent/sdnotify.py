"""systemd's readiness protocol (``Type=notify``), without a dependency.

systemd passes a datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace); ``READY=1`` sent there tells it the service is up, so units ordered after the agent
and ``systemctl start`` wait until the agent really consumes. Outside systemd it does nothing.
"""

import logging
import os
import socket

LOG = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=consuming"``) to systemd; False when not under it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as err:
        LOG.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), err.strerror or err)
        return False
    return True
