"""The driver's keystoneauth session, without the per-request costs that need not be per request.

A VM-details read is one Nova request, so what keystoneauth and requests do around each request
is a large share of the agent's own work. Two of those things give the same answer every time:

- The catalog look-up. Without ``nova_base_url`` (and always for Glance and Neutron) keystoneauth
  finds each request's endpoint in the token's catalog, which it deep-copies on every look-up.
  The catalog belongs to the token, so ``DriverSession`` looks each endpoint up once per
  token: a new token (expiry, a 401, ``invalidate``) means a new look-up.
- The environment. requests searches ``os.environ`` for ``*_proxy`` variables and
  ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, and the disk for a ``.netrc``, on every request.
  A process's environment does not change from outside, so the session reads it once when it
  is built: a CA bundle variable becomes the session's ``verify`` (as requests would use it),
  and unless a proxy variable or a netrc file is there, requests is told not to search again
  (``trust_env``). With a proxy or a netrc, requests keeps honouring them per request.
"""

import os
import threading
from typing import Any, Dict, Optional, Tuple

from keystoneauth1 import session as ks_session

_NETRC_FILES = ("~/.netrc", "~/_netrc")


def environment_per_request() -> bool:
    """True when requests must keep reading the environment per request: a proxy variable
    (``*_proxy`` in any case, ``no_proxy`` included, as urllib reads them) or a netrc file
    (``NETRC`` or in the home folder), whose answers depend on each request's host."""
    environ = os.environ
    if any(name.lower().endswith("_proxy") and value for name, value in environ.items()):
        return True
    return bool(environ.get("NETRC")) or any(os.path.exists(os.path.expanduser(path)) for path in _NETRC_FILES)


def environment_ca_bundle() -> Optional[str]:
    """The CA bundle requests takes from the environment when verification is on, or None."""
    environ = os.environ
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or None


class DriverSession(ks_session.Session):
    """A keystoneauth session that reads the environment once and each catalog endpoint once per token.

    The endpoints are kept in a table that belongs to one token (the plugin's ``auth_ref``,
    which keystoneauth replaces whenever it authenticates again). Thread-safe: the table is
    replaced, never changed in place, and two threads resolving the same endpoint at once
    only look it up twice.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not environment_per_request():
            self.session.trust_env = False
            if self.verify is True:
                self.verify = environment_ca_bundle() or True
        self._endpoints: Tuple[Any, Dict[str, Optional[str]]] = (None, {})
        self._endpoints_lock = threading.Lock()

    def get_endpoint(self, auth: Any = None, **kwargs: Any) -> Optional[str]:
        """The endpoint keystoneauth would give, from this token's table once it is known."""
        if kwargs.get("endpoint_override"):
            return kwargs["endpoint_override"]
        plugin = auth or self.auth
        token, table = self._endpoints
        current = getattr(plugin, "auth_ref", None)
        key = repr(sorted(kwargs.items()))
        if current is not None and current is token and key in table:
            return table[key]
        endpoint = super().get_endpoint(auth, **kwargs)  # authenticates first when there is no token
        current = getattr(plugin, "auth_ref", None)
        if endpoint is not None and current is not None:
            with self._endpoints_lock:
                token, table = self._endpoints
                self._endpoints = (current, {**table, key: endpoint} if token is current else {key: endpoint})
        return endpoint
