"""The `cloudmanagers agent` command in a subprocess, and the files it is given.

Shared by the start-up checks that need no broker (tests/unit) and those that do (tests/agent).
"""

import os
import subprocess
import sys

import pytest

from tests.support import ROOT



# Root reads any file through these two capabilities; without them it meets "permission denied"
# on a file of mode 000 while still reaching the interpreter and the checkout, wherever they are.
NO_FILE_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                     "--bounding-set=-dac_override,-dac_read_search"]


def agent_command(*args, env=None, unreadable_files=False):
    """`cloudmanagers agent ARGS` of this checkout in a subprocess (stdout and stderr together)."""
    command = [sys.executable, "-m", "cloudmanagers_plugin.cli", "agent", *args]
    if unreadable_files and os.geteuid() == 0:
        command = [*NO_FILE_OVERRIDE, *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def finish(process, timeout=30):
    """(exit code, output) of an agent subprocess that must end by itself."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"the agent kept running:\n{output}")
    return process.returncode, output


def write_file(path, text, mode=0o600):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)
    return path


CM_SECTION = ("[cm1]\ncm_type = openstack\nkeystone_base_url = http://127.0.0.1:5000/v3\nproject_name = demo\n"
              "username = demo\npassword = secret\ncompute_api_version = 2.60\n[cm2]\ncm_type = openstack\n")
