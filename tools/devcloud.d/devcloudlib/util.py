"""Small helpers shared by the devcloud commands: progress output, running
commands with their output in a log file, waiting for ports and URLs.

Failures raise ``DevcloudError`` carrying the log file that explains them, so
the CLI can print its tail and exit non-zero ("fail loudly").
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, Iterable, Iterator, List, Optional

_STARTED = time.monotonic()


class DevcloudError(Exception):
    """A failure the user must see; ``log`` is the file whose tail explains it."""

    def __init__(self, message: str, log: Optional[str] = None):
        super().__init__(message)
        self.log = log


def say(message: str) -> None:
    """One progress line, prefixed with the seconds since the command began."""
    print(f"[devcloud {time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)


@contextlib.contextmanager
def phase(title: str) -> Iterator[None]:
    """Print a phase's start and its duration (or that it failed): slow steps show where time goes."""
    say(f"{title} ...")
    started = time.monotonic()
    try:
        yield
    except BaseException:
        say(f"{title} FAILED after {time.monotonic() - started:.1f}s")
        raise
    say(f"{title} done in {time.monotonic() - started:.1f}s")


def tail(path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a log (read from its last 64 KiB: logs grow large)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError as error:
        return f"(cannot read {path}: {error})"
    return "\n".join(data.splitlines()[-lines:])


def run(argv: List[str], log: Optional[str] = None, env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None, check: bool = True, timeout: float = 600,
        input_text: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a command. With ``log`` its output is appended there, else captured.

    Returns the CompletedProcess (stdout is text when captured). With check,
    a non-zero exit raises DevcloudError pointing at the log.
    """
    command = " ".join(argv)
    if log:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n$ {command}\n".encode())
            out.flush()
            try:
                completed = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                           timeout=timeout, input=input_text.encode() if input_text else None,
                                           stdin=None if input_text else subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise DevcloudError(f"timed out after {timeout}s: {command}", log)
        if check and completed.returncode != 0:
            raise DevcloudError(f"command failed (exit {completed.returncode}): {command}", log)
        return completed
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                                   input=input_text, stdin=None if input_text else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DevcloudError(f"timed out after {timeout}s: {command}")
    if check and completed.returncode != 0:
        raise DevcloudError(f"command failed (exit {completed.returncode}): {command}\n"
                            f"{completed.stdout[-3000:]}{completed.stderr[-3000:]}")
    return completed


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on the port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """True when something speaks HTTP at url (any status below 500)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except (OSError, ValueError):
        return False


def wait_for(predicate: Callable[[], object], timeout: float, what: str, log: Optional[str] = None,
             interval: float = 0.2, alive: Optional[Callable[[], bool]] = None) -> None:
    """Poll predicate until true. ``alive`` (optional) is checked too: when it
    returns False the process we wait for has died, so fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise DevcloudError(f"{what}: the process exited", log)
        if time.monotonic() > deadline:
            raise DevcloudError(f"{what}: not ready after {int(timeout)}s", log)
        time.sleep(interval)


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write atomically with the given mode (secrets are never world-readable)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def which(executable: str, extra_dirs: Iterable[str] = ("/usr/sbin", "/sbin", "/usr/local/sbin")) -> Optional[str]:
    """The path of a program, also in the sbin folders a non-login shell may lack in PATH."""
    found = shutil.which(executable)
    if found:
        return found
    for folder in extra_dirs:
        path = os.path.join(folder, executable)
        if os.access(path, os.X_OK):
            return path
    return None


def print_error(message: str) -> None:
    """The one error line a failed command prints."""
    print(f"devcloud: error: {message}", file=sys.stderr, flush=True)
