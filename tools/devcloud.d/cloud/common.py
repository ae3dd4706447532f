"""Shared bits of the cloud-side scripts (run with the devcloud venv's python).

Sessions are built with keystoneauth1 v3 passwords from the parameters file
the launcher writes (``<base>/etc/cloud-params.json``), so these scripts never
need the settings logic of the stdlib side.
"""

import sys
import time

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

_T0 = time.monotonic()


def log(msg):
    """Progress for the launcher's log (stderr); stdout is kept for results."""
    print("[cloudctl %6.1fs] %s" % (time.monotonic() - _T0, msg), file=sys.stderr, flush=True)


def session(params, who):
    cred = params["credentials"][who]
    auth = v3.Password(
        auth_url=params["auth_url"], username=cred["username"], password=cred["password"],
        project_name=cred["project_name"], user_domain_name="Default",
        project_domain_name="Default")
    return ks_session.Session(auth=auth, timeout=30)


def nova(params, who, version="2.1"):
    from novaclient import client
    return client.Client(version, session=session(params, who), region_name=params["region"])


def poll(fn, timeout, what, interval=0.25):
    """Call fn until it returns a truthy value; raise after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        val = fn()
        if val:
            return val
        if time.monotonic() > deadline:
            raise RuntimeError("%s: gave up after %ds" % (what, timeout))
        time.sleep(interval)
