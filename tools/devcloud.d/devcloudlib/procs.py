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
from typing import Dict, List, NamedTuple, Optional, Tuple

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_DEAD = ("Z", "X")  # zombie or dead: the process no longer runs


class ProcessStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` the devcloud reads."""

    state: str
    process_group: int
    start_time: int  # clock ticks after boot: with the pid, identifies one process
    rss_bytes: int


def _stat(pid: int) -> Optional[ProcessStat]:
    """The process's stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except (OSError, TypeError):
        return None
    fields = raw.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return ProcessStat(fields[0], int(fields[2]), int(fields[19]), int(fields[21]) * _PAGE_SIZE)


def process_start_time(pid: int) -> Optional[int]:
    """The process's start time (None when it is gone): what tells a recycled pid apart."""
    stat = _stat(pid)
    return stat.start_time if stat else None


def write_pidfile(path: str, pid: int) -> None:
    """Record ``pid`` and its start time."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        handle.write(f"{pid} {process_start_time(pid) or ''}\n")
    os.replace(path + ".tmp", path)


def _read(path: str) -> Tuple[Optional[int], Optional[int]]:
    """(pid, start time) from a pid file; (None, None) when it is missing or unreadable."""
    try:
        with open(path) as handle:
            parts = handle.read().split()
    except OSError:
        return None, None
    if not parts or not parts[0].isdigit():
        return None, None
    return int(parts[0]), (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None)


def read_pidfile(path: str) -> Optional[int]:
    """The pid a pid file names, alive or not."""
    return _read(path)[0]


def pid_alive(path: str) -> bool:
    """True when the pid file names a live (non-zombie) process that is the one we started."""
    pid, start_time = _read(path)
    if pid is None:
        return False
    stat = _stat(pid)
    if stat is None or stat.state in _DEAD:
        return False
    return start_time is None or stat.start_time == start_time


def group_members(process_group: int) -> List[int]:
    """The live processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat.process_group == process_group and stat.state not in _DEAD:
                members.append(int(entry))
    return members


def group_rss(process_group: int) -> int:
    """Resident memory of a whole process group in bytes (workers included)."""
    total = 0
    for pid in group_members(process_group):
        stat = _stat(pid)
        if stat:
            total += stat.rss_bytes
    return total


def spawn(argv: List[str], pidfile: str, logfile: str, env: Optional[Dict[str, str]] = None,
          cwd: Optional[str] = None) -> int:
    """Start argv in a new session with stdout+stderr appended to logfile; returns its pid."""
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    with open(logfile, "ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=cwd, start_new_session=True, close_fds=True)
    write_pidfile(pidfile, process.pid)
    process.returncode = 0  # we never wait() on daemons; silence Popen's destructor warning
    return process.pid


def _reap() -> None:
    """Collect exited children of this process so they don't linger as zombies."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
    except ChildProcessError:
        return


def stop_groups(pidfiles: List[str], timeout: float = 10.0) -> Dict[str, str]:
    """TERM the process group of every live pid file, wait up to timeout, KILL
    the leftovers. Returns {pidfile: "stopped after Ns"|"killed after Ns"|"not running"}."""
    result: Dict[str, str] = {}
    groups: Dict[str, int] = {}
    for path in pidfiles:
        process_group = read_pidfile(path)
        if pid_alive(path) and process_group is not None:
            groups[path] = process_group
            try:
                os.killpg(process_group, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            result[path] = "not running"
    started = time.monotonic()
    deadline = started + timeout
    while groups and time.monotonic() < deadline:
        _reap()
        for path, process_group in list(groups.items()):
            if not group_members(process_group):
                result[path] = f"stopped after {time.monotonic() - started:.1f}s"
                del groups[path]
        if groups:
            time.sleep(0.1)
    for path, process_group in groups.items():
        try:
            os.killpg(process_group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        result[path] = f"killed after {timeout:.0f}s"
    if groups:
        time.sleep(0.2)
        _reap()
    for path in pidfiles:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return result
