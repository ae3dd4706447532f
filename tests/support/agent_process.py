"""An agent process with the counting fake controller, for the SIGTERM test:
python -m tests.support.agent_process UUID (with the repository root on PYTHONPATH)."""

import logging
import sys

from cloudmanagers_plugin.agent.service import AgentService
from tests.support.agent import FakeController, agent_settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = agent_settings(uuid=sys.argv[1], exchange="")
    return AgentService(settings, FakeController(agent_uuid=settings.uuid)).run_until_signalled()


if __name__ == "__main__":
    sys.exit(main())
