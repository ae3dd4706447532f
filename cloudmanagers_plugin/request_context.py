"""What the host knows about the request being run that is not in the message: its correlation id.

The plugin contract is ``process(message)``; the legacy synapse agent calls it that way and
must keep working. The standalone agent also knows the request's AMQP correlation id, which
lets the controller make a reboot happen once per request even when the request is
redelivered; it passes the id beside the contract, for the duration of one ``process`` call.
"""

import contextvars
from contextlib import contextmanager
from typing import Iterator, Optional

_CORRELATION_ID: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("correlation_id", default=None)


@contextmanager
def running_request(request_correlation_id: Optional[str]) -> Iterator[None]:
    """Within the block (on this thread), ``correlation_id()`` is the request's id."""
    token = _CORRELATION_ID.set(request_correlation_id or None)
    try:
        yield
    finally:
        _CORRELATION_ID.reset(token)


def correlation_id() -> Optional[str]:
    """The correlation id of the request being run, or None (legacy agent, or none was sent)."""
    return _CORRELATION_ID.get()
