"""The controller under test: a cloud managers file to write, and a reply to read.

Shared by the unit tests (through the fixtures of ``tests/unit/conftest.py``) and by every test
that needs a config file of its own.
"""

import os
import textwrap

from tests.support.fakecloud import PASSWORD

LEGACY_SECTION = f"""
[test_os]
cm_type = openstack
url = http://127.0.0.1
keystone_base_url = http://127.0.0.1:5000/v2.0
nova_base_url = http://127.0.0.1:8774/v2/
tenant_name = demo
username = demo
password = {PASSWORD}
"""


def write_config(path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    os.chmod(path, 0o600)
    return str(path)


def status_of(reply):
    assert "error" not in reply, reply["error"]
    return reply["status"]
