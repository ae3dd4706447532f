"""Agent config: legacy keys and defaults, the [agent] options, --url, and the kept uuid."""

import dataclasses
import os
import re

import pytest

from cloudmanagers_plugin.agent import settings as settings_module
from cloudmanagers_plugin.agent.admission import Permissions
from cloudmanagers_plugin.agent.settings import (
    AgentSettings, BrokerSettings, apply_url, load_settings, resolve_uuid, safe_summary,
)
from cloudmanagers_plugin.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "synapse-agent.conf"
    path.write_text(text)
    return str(path)


def test_missing_default_file_means_legacy_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(settings_module, "DEFAULT_AGENT_CONFIG", str(tmp_path / "absent.conf"))
    settings = load_settings()
    broker = settings.broker
    assert (broker.host, broker.port, broker.ssl_port, broker.vhost) == ("localhost", 5672, 5671, "/")
    assert (broker.username, broker.password, broker.use_ssl, broker.ssl_auth) == ("guest", "guest", False, False)
    assert (broker.heartbeat, broker.retry_delay, broker.connection_attempts) == (30, 5.0, 5000)
    assert broker.cacertfile == "/etc/synapse-agent/ssl/certs/cacert.pem"
    assert (settings.uuid, settings.exchange, settings.publish_exchange, settings.publish_routing_key) == (
        "", "amq.fanout", "inbox", "")
    assert (settings.workers, settings.max_request_age, settings.declare, settings.permissions) == (8, 300, True, "")


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "typo.conf"))


def test_reads_rabbitmq_agent_and_log_sections(tmp_path):
    path = write(tmp_path, """
[rabbitmq]
host = broker.example
port = 5673
vhost = /synapse
username = agent1
password = p%ss:word
use_ssl = yes
uuid = 3a468145-1afc-40d3-baf5-3ba4c0fc3561
exchange = my.fanout
publish_exchange = replies
publish_routing_key = rk
heartbeat = 10
status_exchange = ignored
poller_delay = amq.fanout
[agent]
workers = 3
max_request_age = 0
declare = off
permissions = /etc/synapse-agent/permissions.conf
[log]
level = debug
""")
    settings = load_settings(path)
    assert settings.broker.host == "broker.example" and settings.broker.port == 5673
    assert settings.broker.password == "p%ss:word"  # no interpolation
    assert settings.broker.use_ssl is True and settings.broker.effective_port == 5671
    assert settings.uuid == "3a468145-1afc-40d3-baf5-3ba4c0fc3561"
    assert (settings.exchange, settings.publish_exchange, settings.publish_routing_key) == ("my.fanout", "replies", "rk")
    assert (settings.workers, settings.max_request_age, settings.declare) == (3, 0, False)
    assert settings.permissions == "/etc/synapse-agent/permissions.conf"
    assert settings.log_level == "debug"


@pytest.mark.parametrize("text, message", [
    ("[rabbitmq]\nuse_ssl = maybe\n", "not a boolean"),
    ("[rabbitmq]\nport = five\n", "not a number"),
    ("[agent]\nworkers = 0\n", "workers"),
    ("[rabbitmq]\nport = 70000\n", "port"),
    ("[log]\nlevel = LOUD\n", "level"),
    ("[agent]\nlegacy_timestamp_zone = Mars/Olympus\n", "legacy_timestamp_zone: 'Mars/Olympus' is not a time zone"),
    ("not an ini file", "cannot parse"),
])
def test_bad_values_are_reported(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


def test_url_overrides_and_password_never_shown():
    settings = AgentSettings()
    apply_url(settings.broker, "amqps://bob:s%40cret@rabbit.example:5999/%2Fprod")
    broker = settings.broker
    assert (broker.username, broker.password, broker.host, broker.vhost) == ("bob", "s@cret", "rabbit.example", "/prod")
    assert broker.use_ssl and broker.ssl_port == 5999
    assert "s@cret" not in repr(settings) and "cret" not in broker.describe()
    assert "cret" not in str(safe_summary(settings))
    assert broker.describe() == "amqps://bob@rabbit.example:5999/%2Fprod"


def test_url_scheme_is_checked():
    with pytest.raises(ConfigError, match="amqp"):
        apply_url(AgentSettings().broker, "http://host/")


def test_generated_uuid_is_kept_across_restarts(tmp_path):
    state = str(tmp_path / "state" / "agent.uuid")
    first = resolve_uuid("", state)
    assert resolve_uuid("", state) == first
    configured = "3a468145-1afc-40d3-baf5-3ba4c0fc3561"
    assert resolve_uuid(configured, state) == configured


def test_unwritable_uuid_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="uuid_file"):
        resolve_uuid("", str(blocker / "agent.uuid"))


SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "etc", "synapse-agent")


def test_sample_config_documents_every_default(tmp_path):
    """Uncommenting the first ``#key = value`` of each key in the sample changes nothing."""
    seen, lines = set(), []
    with open(os.path.join(SAMPLES, "synapse-agent.conf"), encoding="utf-8") as sample:
        for line in sample:
            found = re.match(r"#(\w+) = ?(.*)$", line)
            if found and found.group(1) not in seen:
                seen.add(found.group(1))
                lines.append(f"{found.group(1)} = {found.group(2)}")
            elif line.startswith("["):
                lines.append(line.strip())
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert load_settings(path) == AgentSettings()
    documented = {spec.metadata.get("key") or spec.name for cls in (AgentSettings, BrokerSettings)
                  for spec in dataclasses.fields(cls) if "section" in spec.metadata}
    assert documented <= seen


def test_sample_permissions_parse():
    rules = Permissions.load(os.path.join(SAMPLES, "permissions.conf"))
    assert rules.allows("developers", "cloudmanagers", "dev_lab", "delete")
    assert not rules.allows("developers", "cloudmanagers", "prod", "delete")
    assert rules.allows("monitoring", "cloudmanagers", "prod", "ping")
    assert not rules.allows("guest", "cloudmanagers", "prod", "read")


# -- [events] and the state folder (issue 10) ------------------------------------------------------


def test_events_defaults_follow_the_unsolicited_messages_of_the_legacy_agent(monkeypatch, tmp_path):
    monkeypatch.setattr(settings_module, "DEFAULT_AGENT_CONFIG", str(tmp_path / "absent.conf"))
    settings = load_settings()
    assert (settings.events_enabled, settings.poll_interval, settings.reconcile_interval) == (True, 10.0, 1800.0)
    assert settings.events_address == ("inbox", "") and settings.state_dir == "/var/lib/synapse-agent"
    settings = load_settings(write(tmp_path, "[rabbitmq]\npublish_exchange = replies\npublish_routing_key = rk\n"))
    assert settings.events_address == ("replies", "rk")


def test_events_section_is_read(tmp_path):
    settings = load_settings(write(tmp_path, "[agent]\nstate_dir = /srv/state\n[events]\nenabled = no\n"
                                             "poll_interval = 2.5\nreconcile_interval = 600\nexchange = events\n"
                                             "routing_key = cm.events\n"))
    assert (settings.events_enabled, settings.poll_interval, settings.reconcile_interval) == (False, 2.5, 600.0)
    assert settings.events_address == ("events", "cm.events") and settings.state_dir == "/srv/state"
    assert load_settings(write(tmp_path, "[events]\nexchange =\nrouting_key = q\n")).events_address == ("", "q")


@pytest.mark.parametrize("text, named", [
    ("[events]\npoll_interval = 0\n", "[events] poll_interval"),
    ("[events]\nreconcile_interval = -1\n", "[events] reconcile_interval"),
    ("[events]\nexchange = amq.fanout\n", "[events] exchange"),
    ("[events]\nenabled = maybe\n", "enabled"),
])
def test_events_settings_out_of_range_are_refused(tmp_path, text, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(write(tmp_path, text))


def test_events_typo_is_a_warning(tmp_path, caplog):
    load_settings(write(tmp_path, "[events]\npoll_intervall = 5\n"))
    assert "[events] poll_intervall is unknown" in caplog.text
