"""Processes the devcloud owns: launch in their own session, pid files, stop,
memory.

Each daemon starts with ``setsid`` semantics (``start_new_session``), so its
pid is also its process-group id and gunicorn/oslo worker children share it:
stopping TERMs the whole group, then KILLs what is left. A pid file stores the
pid *and* the kernel start time of the process, so a recycled pid is never
mistaken for ours and nothing we did not start is ever signalled.
"""

import os
import signal
import subprocess
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid):
    """(state, pgrp, starttime, rss_bytes) of pid, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            raw = f.read()
    except (OSError, TypeError):
        return None
    rest = raw.rsplit(")", 1)[1].split()
    return rest[0], int(rest[2]), int(rest[19]), int(rest[21]) * _PAGE


def proc_starttime(pid):
    s = _stat(pid)
    return s[2] if s else None


def write_pidfile(path, pid):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write("%d %s\n" % (pid, proc_starttime(pid) or ""))
    os.replace(path + ".tmp", path)


def _read(path):
    try:
        with open(path) as f:
            parts = f.read().split()
    except OSError:
        return None, None
    if not parts or not parts[0].isdigit():
        return None, None
    return int(parts[0]), (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None)


def read_pidfile(path):
    return _read(path)[0]


def pid_alive(path):
    """True when the pid file names a live (non-zombie) process that is the one we started."""
    pid, start = _read(path)
    if pid is None:
        return False
    s = _stat(pid)
    if s is None or s[0] in ("Z", "X"):
        return False
    return start is None or s[2] == start


def group_members(pgid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s and s[1] == pgid and s[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def group_rss(pgid):
    total = 0
    for pid in group_members(pgid):
        s = _stat(pid)
        if s:
            total += s[3]
    return total


def spawn(argv, pidfile, logfile, env=None, cwd=None):
    """Start argv in a new session with stdout+stderr appended to logfile."""
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    with open(logfile, "ab") as out:
        out.write(("\n===== %s starting: %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"),
                                                  " ".join(argv))).encode())
        out.flush()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd, start_new_session=True, close_fds=True)
    write_pidfile(pidfile, p.pid)
    p.returncode = 0  # we never wait() on daemons; silence Popen's destructor warning
    return p.pid


def _reap():
    """Collect exited children of this process so they don't linger as zombies."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
    except ChildProcessError:
        return


def stop_groups(pidfiles, timeout=10.0):
    """TERM the process group of every live pid file, wait up to timeout, KILL
    the leftovers. Returns {pidfile: "stopped after Ns"|"killed after Ns"|"not running"}."""
    result, groups = {}, {}
    for path in pidfiles:
        if pid_alive(path):
            pgid = read_pidfile(path)
            groups[path] = pgid
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            result[path] = "not running"
    t0 = time.monotonic()
    deadline = t0 + timeout
    while groups and time.monotonic() < deadline:
        _reap()
        for path, pgid in list(groups.items()):
            if not group_members(pgid):
                result[path] = "stopped after %.1fs" % (time.monotonic() - t0)
                del groups[path]
        if groups:
            time.sleep(0.1)
    for path, pgid in groups.items():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        result[path] = "killed after %.0fs" % timeout
    if groups:
        time.sleep(0.2)
        _reap()
    for path in pidfiles:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return result
