"""One envelope parser and one true/false vocabulary, wherever a request or a config is read."""

import json

import pytest

from cloudmanagers_plugin.agent.admission import Gate, HostFilter
from cloudmanagers_plugin.agent.settings import load_settings
from cloudmanagers_plugin.config import ConfigFile
from cloudmanagers_plugin.errors import ConfigError
from cloudmanagers_plugin.values import FALSE_WORDS, TRUE_WORDS
from tests.support.controller import LEGACY_SECTION, write_config

BAD_ENVELOPES = [
    {"collection": "cloudmanagers", "action": "read", "id": 5},
    {"collection": "cloudmanagers", "action": "read", "id": "c" * 300},
    {"collection": "cloudmanagers", "action": 7},
    {"collection": "cloudmanagers", "action": ""},
    {"collection": "cloudmanagers"},
    {"collection": "cloudmanagers", "action": "read", "attributes": [1]},
    {"collection": "cloudmanagers", "action": "read", "attributes": None},
    {"collection": "cloudmanagers", "action": "read", "monitor": "yes"},
    {"collection": "cloudmanagers", "action": "read", "timestamp": 7},
    {"collection": "files", "action": "read"},
    {"collection": 3, "action": "read"},
]


@pytest.mark.parametrize("message", BAD_ENVELOPES, ids=lambda message: json.dumps(message)[:60])
def test_the_agent_and_the_controller_say_the_same_about_a_bad_field(controller, message):
    gate = Gate("agent", "cloudmanagers", HostFilter("agent"), None, 0)
    refused = json.loads(gate.admit(json.dumps(message).encode(), "guest").answer.body)
    assert refused["error"] == controller.process(message)["error"]


@pytest.mark.parametrize("word, meaning", [(word, True) for word in TRUE_WORDS + ("YES", "On", "Y")]
                         + [(word, False) for word in FALSE_WORDS + ("NO", "Off")])
def test_a_request_and_both_config_files_share_one_boolean_vocabulary(call, tmp_path, word, meaning):
    agent_config = tmp_path / "agent.conf"
    agent_config.write_text(f"[rabbitmq]\nuse_ssl = {word}\n")
    assert load_settings(str(agent_config)).broker.use_ssl is meaning
    path = write_config(tmp_path / "cm.conf", LEGACY_SECTION + f"insecure = {word}\n")
    assert ConfigFile(path).get("test_os").insecure is meaning
    assert ("servers" in call("read", details=word)["status"]) is meaning


@pytest.mark.parametrize("where", ["request", "agent config", "cloud managers file"])
def test_a_word_that_is_no_boolean_is_refused_alike(call, tmp_path, where):
    if where == "request":
        error = call("read", details="maybe")["error"]
    elif where == "agent config":
        (tmp_path / "agent.conf").write_text("[rabbitmq]\nuse_ssl = maybe\n")
        with pytest.raises(ConfigError) as raised:
            load_settings(str(tmp_path / "agent.conf"))
        error = str(raised.value)
    else:
        with pytest.raises(ConfigError) as raised:
            ConfigFile(write_config(tmp_path / "cm.conf", LEGACY_SECTION + "insecure = maybe\n")).get("test_os")
        error = str(raised.value)
    assert error.endswith("must be true or false (or yes/no, on/off, 1/0); 'maybe' is not a boolean")
