"""Full server lifecycle as the demo user over real HTTP (``selftest``).

Mirrors what the plugin does with python-novaclient at microversion 2.96:
flavors, images via Glance, boot, pause/unpause, suspend/resume, stop/start,
reboot soft/hard, resize + confirm, noVNC console URL, delete; then the
failure path: an admin-made flavor with absurd vCPUs puts a server in ERROR
with a ``fault``. Every step's duration is reported.
"""

import time

from novaclient import exceptions as nova_exc

from common import log, nova, poll

MICROVERSION = "2.96"


class Steps:
    def __init__(self):
        self.times = {}

    def run(self, name, fn, *args):
        t = time.monotonic()
        out = fn(*args)
        self.times[name] = round(time.monotonic() - t, 2)
        log("%-28s %5.2fs  %s" % (name, self.times[name], "" if out is None else out))
        return out


def _wait_status(nv, sid, status, timeout=120):
    def check():
        s = nv.servers.get(sid)
        task = getattr(s, "OS-EXT-STS:task_state", None)
        if s.status == status and task is None:
            return s
        if s.status == "ERROR" and status != "ERROR":
            raise RuntimeError("server went to ERROR: %s" % getattr(s, "fault", None))
        return None
    return poll(check, timeout, "server %s -> %s" % (sid, status), interval=0.2)


def _wait_gone(nv, sid, timeout=60):
    def gone():
        try:
            nv.servers.get(sid)
            return False
        except nova_exc.NotFound:
            return True
    poll(gone, timeout, "server %s deleted" % sid, interval=0.2)


def run(params):
    nv = nova(params, "demo", MICROVERSION)
    created = []
    try:
        return _run(params, nv, created)
    finally:  # never leave selftest servers behind, even when a step failed
        for sid in created:
            try:
                nv.servers.delete(sid)
            except nova_exc.NotFound:
                pass


def _run(params, nv, created):
    steps = Steps()
    ids = steps.run("list flavors", lambda: sorted(f.id for f in nv.flavors.list()))
    assert {"1", "2", "3"} <= set(ids), ids
    names = steps.run("list images (glance)", lambda: [i.name for i in nv.glance.list()])
    assert params["image_name"] in names, names
    image = nv.glance.find_image(params["image_name"])

    def boot():
        s = nv.servers.create("devcloud-selftest", image.id, "1", nics="auto")
        created.append(s.id)
        return _wait_status(nv, s.id, "ACTIVE")
    server = steps.run("boot flavor 1 -> ACTIVE", boot)
    sid = server.id
    steps.run("addresses", lambda: nv.servers.get(sid).addresses)

    def act(call, status):
        call()
        _wait_status(nv, sid, status)
        return status
    for verb, undo, mid in (("pause", "unpause", "PAUSED"), ("suspend", "resume", "SUSPENDED"),
                            ("stop", "start", "SHUTOFF")):
        steps.run(verb, act, lambda v=verb: getattr(nv.servers, v)(sid), mid)
        steps.run(undo, act, lambda u=undo: getattr(nv.servers, u)(sid), "ACTIVE")
    steps.run("reboot soft", act, lambda: nv.servers.reboot(sid), "ACTIVE")
    steps.run("reboot hard", act, lambda: nv.servers.reboot(sid, "HARD"), "ACTIVE")
    steps.run("resize to 2 -> VERIFY_RESIZE", act, lambda: nv.servers.resize(sid, "2"),
              "VERIFY_RESIZE")

    def confirm():
        nv.servers.confirm_resize(sid)
        s = _wait_status(nv, sid, "ACTIVE")
        assert s.flavor["original_name"] == "m1.small", s.flavor
        return "ACTIVE, flavor %s" % s.flavor["original_name"]
    steps.run("confirm resize", confirm)
    url = steps.run("novnc console url",
                    lambda: nv.servers.get(sid).get_console_url("novnc")["remote_console"]["url"])
    assert url.startswith("http://127.0.0.1:"), url

    def delete():
        nv.servers.delete(sid)
        _wait_gone(nv, sid)
        return "gone"
    steps.run("delete", delete)

    admin = nova(params, "admin", MICROVERSION)
    flavor = admin.flavors.create("devcloud-selftest-impossible", 512, 100000, 1, is_public=True)
    try:
        def doomed():
            s = nv.servers.create("devcloud-selftest-doomed", image.id, flavor.id, nics="auto")
            created.append(s.id)
            s = _wait_status(nv, s.id, "ERROR")
            nv.servers.delete(s.id)
            _wait_gone(nv, s.id)
            return "ERROR, fault: %s" % s.fault["message"]
        fault = steps.run("vcpus=100000 -> ERROR", doomed)
        assert "No valid host" in fault, fault
    finally:
        admin.flavors.delete(flavor.id)
    log("selftest passed: %d steps, %.1fs in total" % (len(steps.times), sum(steps.times.values())))
    return {"selftest_seconds": steps.times}
