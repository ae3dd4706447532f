"""The OpenStack driver is shared by every worker thread: its caches must stand concurrent use."""

import sys
import threading

import pytest

from cloudmanagers_plugin.drivers import openstack
from cloudmanagers_plugin.drivers.base import Server
from cloudmanagers_plugin.states import ServerAction


@pytest.fixture
def switch_often():
    """Make the interpreter switch threads every microsecond, so interleavings that are rare
    under a normal load (a dict changed while another thread iterates it) happen in every run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_console_cache_stands_reads_and_state_actions_at_once(controller, cloud, monkeypatch, switch_often):
    """One thread reads the consoles of many VMs (the full cache is pruned on every new VM) while
    another runs state actions, each of which forgets that VM's console."""
    monkeypatch.setattr(openstack, "CONSOLE_CACHE_SIZE", 50)
    driver = controller.driver("test_os")
    target = cloud.add_server("target")
    others = [cloud.add_server(f"vm{n}") for n in range(400)]
    errors = []

    def read_consoles():
        try:
            for other in others:
                driver.console(Server(id=target["id"], name="target", status="ACTIVE"))
                driver.console(Server(id=other["id"], name=other["name"], status="ACTIVE"))
        except Exception as exc:  # the assertion below reports it
            errors.append(exc)

    reader = threading.Thread(target=read_consoles)
    reader.start()
    while reader.is_alive():
        driver.set_state(target["id"], ServerAction.REBOOT_SOFT)
    reader.join()
    assert errors == []
