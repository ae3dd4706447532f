"""The agent's configuration dicts, with the defaults of the legacy agent (config.py)."""

import configparser

controller = {
    "ignored_resources": "",
    "persistence_path": "/var/lib/synapse-agent/persistence",
    "custom_plugins": "/var/lib/synapse-agent/plugins",
    "distribution_name": "centos",
    "distribution_version": "6_4",
}
monitor = {"default_interval": 30}
compliance = {"alert_interval": 3600}
rabbitmq = {"uuid": "00000000-0000-4000-8000-000000000001"}
AGENT_VERSION = "stub"


def load(path):
    """Update the dicts above from a synapse-agent.conf (INI) file."""
    parser = configparser.RawConfigParser()
    with open(path) as handle:
        parser.read_file(handle)
    for name, values in (("controller", controller), ("monitor", monitor),
                         ("compliance", compliance), ("rabbitmq", rabbitmq)):
        if parser.has_section(name):
            values.update(parser.items(name))
    monitor["default_interval"] = int(monitor["default_interval"])
    compliance["alert_interval"] = int(compliance["alert_interval"])
