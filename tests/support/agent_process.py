"""An agent process with the counting fake controller, for the tests that stop or kill agents:
python -m tests.support.agent_process UUID [options] (with the repository root on PYTHONPATH).

Without options it serves the local broker (the SIGTERM test); the HA tests and benches give it
the cluster's nodes, the queue type and the consumer mode of a group.
"""

import argparse
import logging
import sys

from cloudmanagers_plugin.agent.service import AgentService
from tests.support.agent import FakeController, agent_settings


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("uuid")
    parser.add_argument("--hosts", default="127.0.0.1", help="[rabbitmq] host: one node or several")
    parser.add_argument("--queue-type", default="classic")
    parser.add_argument("--consumers", default="")
    parser.add_argument("--delivery-limit", type=int, default=5)
    parser.add_argument("--heartbeat", type=int, default=30)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each request takes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = agent_settings(uuid=args.uuid, exchange="", queue_type=args.queue_type, consumers=args.consumers,
                              delivery_limit=args.delivery_limit, workers=args.workers)
    settings.broker.host = args.hosts
    settings.broker.heartbeat = args.heartbeat
    service = AgentService(settings, FakeController(latency=args.latency, agent_uuid=settings.uuid))
    service.status.on_role_change(lambda role: print(f"ROLE {role}", flush=True))
    return service.run_until_signalled()


if __name__ == "__main__":
    sys.exit(main())
