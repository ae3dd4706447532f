"""Rate limits: a cloud's 429 (or 503) answer that says when to come back (``Retry-After``).

Every HTTP response of a section's session passes ``raise_when_limited`` (a requests response
hook), so the one place that sees the headers turns a rate-limited answer into ``RateLimited``
whichever client (novaclient, Glance or Neutron adapter, Keystone auth) made the request;
novaclient keeps no ``Retry-After`` of a 503. The driver decides whether the request may be sent
again. keystoneauth's own retry (``status_code_retries``) is not used: it would resend any
request, a create included, and sleep whatever ``Retry-After`` says, past the section's timeout.
"""

import email.utils
import time
from typing import Any, Optional

from ..errors import RateLimited

RETRIABLE_STATUSES = (429, 503)


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def raise_when_limited(response: Any, *args: Any, **kwargs: Any) -> Any:
    """requests response hook: a 429/503 with a usable ``Retry-After`` raises ``RateLimited``."""
    if response.status_code in RETRIABLE_STATUSES:
        seconds = retry_after_seconds(response.headers.get("Retry-After"))
        if seconds is not None:
            response.close()  # hand the connection back: nobody reads this body
            raise RateLimited(
                f"OpenStack answered {response.status_code} and asks to retry after {seconds:g} s",
                status=response.status_code, retry_after=seconds,
            )
    return response
