"""Every example message of the plugin's documented API, with the status keys its reply keeps.

Shared by the unit tests (faked HTTP) and the end-to-end tests (real RabbitMQ and OpenStack):
``message(cm, **attrs)`` builds a request exactly as the documentation shows it.
"""

from typing import Any, Dict

SEED_IMAGE = "25150b69-c221-4972-822e-9ab1a4884957"


def message(action: str, cm_id: str = "", **attributes: Any) -> Dict[str, Any]:
    """A request in the documented shape (``filters`` empty, ``attributes`` an object)."""
    return {"collection": "cloudmanagers", "filters": {}, "action": action, "attributes": attributes, "id": cm_id}


# name -> (action, attributes, the status keys of the documented reply)
EXAMPLES = {
    "list cloud managers": ("read", None, {"cloudmanagers"}),
    "list VMs": ("read", {}, {"VMs", "cloudmanagers", "url"}),
    "VM details": ("read", {"name": "haproxy"},
                   {"cloudmanager", "url", "vm_flavor", "vm_name", "vm_status", "vm_vcpus", "vm_vnc_port"}),
    "list images": ("read", {"listimages": "1"}, {"cloudmanagers", "images", "url"}),
    "create": ("create", {"flavor": "1", "image": SEED_IMAGE, "name": "test", "key": "tim-os",
                          "user-data": "IyEvYmluL2Jhc2gNCnRvdWNoIC9ob21lL3VidW50dS9jb3Vjb3U="},
               {"cloudmanager", "created", "vm_name", "vm_status"}),
    "shutdown": ("update", {"status": "shutdown", "name": "haproxy"}, {"cloudmanager", "vm_name", "vm_status"}),
    "resize": ("update", {"flavor": "2", "name": "haproxy"}, {"cloudmanager", "vm_flavor", "vm_name"}),
    "delete": ("delete", {"name": "haproxy"}, {"cloudmanager", "deleted", "vm_name", "vm_status"}),
}

REPLY_KEYS = {"uuid", "resource_id", "collection", "status", "msg_type", "version"}


def example(which: str, cm_id: str, **overrides: Any) -> Dict[str, Any]:
    """The documented request ``which`` for cloud manager ``cm_id`` (attributes may be overridden)."""
    action, attributes, _ = EXAMPLES[which]
    if attributes is None:
        return message(action, "")
    return message(action, cm_id, **{**attributes, **overrides})


def assert_seed_reply(name: str, reply: Dict[str, Any], cm_id: str) -> None:
    """The reply has the envelope and every status key of the documented example."""
    assert "error" not in reply, reply.get("error")
    assert REPLY_KEYS <= set(reply), reply
    assert reply["collection"] == "cloudmanagers"
    assert reply["msg_type"] == "response"
    expected = EXAMPLES[name][2]
    assert expected <= set(reply["status"]), f"{name}: missing {expected - set(reply['status'])}"
    if EXAMPLES[name][1] is not None:
        assert reply["resource_id"] == cm_id
