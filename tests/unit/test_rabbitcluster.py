"""tools/rabbitcluster without starting anything: its layout keeps every node apart from the
machine's broker (ports, cookie, epmd, config files), and status reads up/down per node."""

import importlib.machinery
import importlib.util
import os
from argparse import Namespace
from pathlib import Path

import pytest

from tests.support import ROOT


@pytest.fixture(scope="module")
def tool():
    loader = importlib.machinery.SourceFileLoader("rabbitcluster", os.path.join(ROOT, "tools", "rabbitcluster"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("rabbitcluster", loader))
    loader.exec_module(module)
    return module


def test_each_node_has_its_own_ports_folders_and_the_cluster_its_own_cookie_and_epmd(tool, tmp_path, monkeypatch):
    monkeypatch.setenv("RABBITMQ_NODENAME", "rabbit@localhost")  # the machine's broker's settings must not leak in
    monkeypatch.setenv("ERL_EPMD_PORT", "4369")
    layout = tool.Layout(tmp_path, 26100, "rabbitcluster")
    env = layout.environment(2)
    assert (env["RABBITMQ_NODENAME"], env["RABBITMQ_NODE_PORT"], env["RABBITMQ_DIST_PORT"]) == (
        "rabbitcluster2@localhost", "26102", "26112")
    assert env["HOME"] == str(tmp_path / "home") and env["ERL_EPMD_PORT"] == "26130"
    assert env["RABBITMQ_MNESIA_BASE"] == str(tmp_path / "node2" / "mnesia")
    assert env["RABBITMQ_CONF_ENV_FILE"] == str(tmp_path / "rabbitmq-env.conf")  # never /etc/rabbitmq's
    assert (env["RABBITMQ_CTL_DIST_PORT_MIN"], env["RABBITMQ_CTL_DIST_PORT_MAX"]) == ("26120", "26129")
    assert all(int(env[key]) < 32768 for key in ("RABBITMQ_NODE_PORT", "RABBITMQ_DIST_PORT", "ERL_EPMD_PORT"))
    assert layout.url(3) == "amqp://guest:guest@127.0.0.1:26103/"
    assert tool.layout_from(Namespace(base=str(tmp_path), port_base="26300", prefix="x")).port_base == 26300


def test_the_cookie_is_made_once_and_readable_only_by_its_owner(tool, tmp_path):
    layout = tool.Layout(tmp_path, 26100, "rabbitcluster")
    tool.write_files(layout)
    cookie = Path(layout.home, ".erlang.cookie")
    first = cookie.read_text()
    tool.write_files(layout)
    assert cookie.read_text() == first and len(first) == 40 and cookie.stat().st_mode & 0o777 == 0o400
    assert (tmp_path / "enabled_plugins").read_text() == "[].\n"  # no management or other listener


def test_status_says_down_for_a_node_that_does_not_run(tool, tmp_path, capsys):
    layout = tool.Layout(tmp_path, 26900, "nobody")
    assert tool.status(layout) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"nobody{index}@localhost amqp://guest:guest@127.0.0.1:{26900 + index}/ down" for index in (1, 2, 3)]


def test_a_port_base_outside_the_allowed_range_is_refused(tool, tmp_path):
    with pytest.raises(SystemExit, match="between 1024"):
        tool.layout_from(Namespace(base=str(tmp_path), port_base="32760", prefix="x"))


def test_a_lone_node_with_tls_has_its_own_config_with_a_tls_listener(tool, tmp_path):
    layout = tool.layout_from(Namespace(base=str(tmp_path), port_base="26300", prefix="tls", nodes="1",
                                        tls=str(tmp_path / "pki")))
    assert layout.indexes == [1] and layout.tls_port(1) == 26341
    tool.write_files(layout)
    config = Path(layout.environment(1)["RABBITMQ_CONFIG_FILE"])
    assert config == tmp_path / "node1" / "rabbitmq.conf"
    text = config.read_text()
    assert "listeners.ssl.default = 127.0.0.1:26341\n" in text and "loopback_users.guest = true\n" in text
    assert f"ssl_options.certfile = {tmp_path / 'pki' / 'cert.pem'}\n" in text
    assert "ssl" not in (tmp_path / "rabbitmq.conf").read_text()  # the shared file stays plain
    assert tool.Layout(tmp_path, 26100, "x").environment(1)["RABBITMQ_CONFIG_FILE"] == str(tmp_path / "rabbitmq.conf")
    with pytest.raises(SystemExit, match="--nodes 0"):
        tool.layout_from(Namespace(base=str(tmp_path), port_base="26300", prefix="x", nodes="0"))
