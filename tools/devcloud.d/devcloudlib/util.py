"""Small helpers shared by the devcloud commands: progress output, running
commands with their output in a log file, waiting for ports and URLs.

Failures raise ``DevcloudError`` carrying the log file that explains them, so
the CLI can print its tail and exit non-zero ("fail loudly").
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

_T0 = time.monotonic()


class DevcloudError(Exception):
    """A failure the user must see; ``log`` is the file whose tail explains it."""

    def __init__(self, message, log=None):
        super().__init__(message)
        self.log = log


def say(msg):
    """One progress line, prefixed with the seconds since the command began."""
    print("[devcloud %6.1fs] %s" % (time.monotonic() - _T0, msg), flush=True)


@contextlib.contextmanager
def phase(title):
    """Print a phase's start and its duration (or that it failed)."""
    say("%s ..." % title)
    t = time.monotonic()
    try:
        yield
    except BaseException:
        say("%s FAILED after %.1fs" % (title, time.monotonic() - t))
        raise
    say("%s done in %.1fs" % (title, time.monotonic() - t))


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    return "\n".join(data.splitlines()[-lines:])


def run(argv, log=None, env=None, cwd=None, check=True, timeout=600, input_text=None):
    """Run a command. With ``log`` its output is appended there, else captured.

    Returns the CompletedProcess (stdout is text when captured). With check,
    a non-zero exit raises DevcloudError pointing at the log.
    """
    if log:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "ab") as out:
            out.write(("\n$ %s\n" % " ".join(argv)).encode())
            out.flush()
            try:
                cp = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    timeout=timeout, input=input_text.encode() if input_text else None,
                                    stdin=None if input_text else subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise DevcloudError("timed out after %ss: %s" % (timeout, " ".join(argv)), log)
        if check and cp.returncode != 0:
            raise DevcloudError("command failed (exit %d): %s" % (cp.returncode, " ".join(argv)), log)
        return cp
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                            input=input_text, stdin=None if input_text else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DevcloudError("timed out after %ss: %s" % (timeout, " ".join(argv)))
    if check and cp.returncode != 0:
        raise DevcloudError("command failed (exit %d): %s\n%s%s" % (
            cp.returncode, " ".join(argv), cp.stdout[-3000:], cp.stderr[-3000:]))
    return cp


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url, timeout=2.0):
    """True when something speaks HTTP at url (any status below 500)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (OSError, ValueError):
        return False


def wait_for(predicate, timeout, what, log=None, interval=0.2, alive=None):
    """Poll predicate until true. ``alive`` (optional) is checked too: when it
    returns False the process we wait for has died, so fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise DevcloudError("%s: the process exited" % what, log)
        if time.monotonic() > deadline:
            raise DevcloudError("%s: not ready after %ds" % (what, timeout), log)
        time.sleep(interval)


def write_file(path, text, mode=0o644):
    """Write atomically with the given mode (secrets are never world-readable)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def which(exe, extra_dirs=("/usr/sbin", "/sbin", "/usr/local/sbin")):
    import shutil
    found = shutil.which(exe)
    if found:
        return found
    for d in extra_dirs:
        p = os.path.join(d, exe)
        if os.access(p, os.X_OK):
            return p
    return None


def err(msg):
    print("devcloud: error: %s" % msg, file=sys.stderr, flush=True)
