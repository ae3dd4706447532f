"""Shared bits of the cloud-side scripts (run with the devcloud venv's python).

Sessions are built with keystoneauth1 v3 passwords from the parameters file
the launcher writes (``<base>/etc/cloud-params.json``), so these scripts never
need the settings logic of the stdlib side.
"""

import sys
import time
from typing import Any, Callable, Dict, TypeVar

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

Params = Dict[str, Any]
T = TypeVar("T")
_STARTED = time.monotonic()


def log(message: str) -> None:
    """Progress for the launcher's log (stderr); stdout is kept for results."""
    print(f"[cloudctl {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def session(params: Params, who: str) -> ks_session.Session:
    """A Keystone session as ``who`` (demo or admin)."""
    login = params["credentials"][who]
    auth = v3.Password(
        auth_url=params["auth_url"], username=login["username"], password=login["password"],
        project_name=login["project_name"], user_domain_name="Default",
        project_domain_name="Default")
    return ks_session.Session(auth=auth, timeout=30)


def nova(params: Params, who: str, version: str = "2.1") -> Any:
    """A novaclient as ``who``; imported here, as only some actions need it."""
    from novaclient import client
    return client.Client(version, session=session(params, who), region_name=params["region"])


def poll(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Call ``check`` until it returns a truthy value; raise after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: gave up after {int(timeout)}s")
        time.sleep(interval)
