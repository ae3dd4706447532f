"""An agent process with the counting fake controller, for the SIGTERM test: agent_process.py UUID."""

import logging
import sys

from agent_helpers import FakeController, agent_settings
from cloudmanagers_plugin.agent.service import AgentService


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = agent_settings(uuid=sys.argv[1], exchange="")
    return AgentService(settings, FakeController(agent_uuid=settings.uuid)).run_until_signalled()


if __name__ == "__main__":
    sys.exit(main())
