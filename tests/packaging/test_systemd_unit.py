"""The agent's systemd unit: confined, as rated by systemd's own tool, and documented with that rating."""

import os
import re
import subprocess

import pytest

from tests.support.packaging import need_tool

pytestmark = pytest.mark.packaging

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
UNIT = os.path.join(ROOT, "packaging", "systemd", "cloudmanagers-agent.service")
MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def rating():
    """``(score, word)`` from ``systemd-analyze security --offline=true``, e.g. ``(1.1, "OK")``."""
    need_tool("systemd-analyze")
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", UNIT],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert found, proc.stdout
    return float(found.group(1)), found.group(2)


def test_systemd_analyze_rates_the_unit_at_most_2_5(rating):
    assert rating[0] <= MAX_EXPOSURE, rating


def test_the_readme_and_the_unit_give_the_score(rating):
    score = f"{rating[0]:.1f} {rating[1]}"
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        assert f"**{score}**" in readme.read()
    with open(UNIT, encoding="utf-8") as unit:
        assert f"rates this unit {score}" in unit.read()


def test_a_dead_agent_is_restarted_but_not_a_configuration_error():
    with open(UNIT, encoding="utf-8") as unit:
        lines = {line.strip() for line in unit}
    assert {"Restart=on-failure", "RestartPreventExitStatus=2"} <= lines  # on-failure covers SIGKILL and crashes
