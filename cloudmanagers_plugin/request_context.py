"""What the host knows about the request being run that is not in the message: its correlation
id, and whether the broker delivered it before.

The plugin contract is ``process(message)``; the legacy synapse agent calls it that way and
must keep working. The standalone agent also knows the request's AMQP correlation id, which
lets the controller run a create, a reboot, the start of a resize or a snapshot once per request
even when the request is redelivered (to this agent or to another one: the id is written on the
VM, or on the snapshot's image), and
the AMQP ``redelivered`` flag, which tells a delete that finds no VM that an earlier delivery
may have deleted it. It passes both beside the contract, for the duration of one ``process`` call.
"""

import contextvars
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional


class _Request(NamedTuple):
    correlation_id: Optional[str]
    redelivered: bool


_REQUEST: contextvars.ContextVar[_Request] = contextvars.ContextVar("request", default=_Request(None, False))


@contextmanager
def running_request(request_correlation_id: Optional[str], redelivered: bool = False) -> Iterator[None]:
    """Within the block (on this thread), ``correlation_id()`` is the request's id and
    ``redelivered()`` the broker's flag."""
    token = _REQUEST.set(_Request(request_correlation_id or None, redelivered))
    try:
        yield
    finally:
        _REQUEST.reset(token)


def correlation_id() -> Optional[str]:
    """The correlation id of the request being run, or None (legacy agent, or none was sent)."""
    return _REQUEST.get().correlation_id


def redelivered() -> bool:
    """True when the broker says the request was delivered before (to this agent or another)."""
    return _REQUEST.get().redelivered
