"""Where log lines go and how they look: a terminal or file, or the systemd journal.

Under systemd (``JOURNAL_STREAM`` names our stderr) each line starts with its syslog priority
(``<3>`` error ... ``<7>`` debug), which journald turns into the entry's priority so
``journalctl -p warning`` works, and carries no time or level text of its own: the journal
records the time, and repeating it only doubles every line.
"""

import logging
import os
import sys
from typing import IO, Optional

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    return next((priority for level, priority in _PRIORITIES if levelno >= level), 7)


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``, with the prefix on every line of a multi-line record."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + part for part in super().format(record).splitlines())


def under_journald(stream: IO) -> bool:
    """True when ``stream`` is the journal stream systemd connected us to."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def report_error(text: str, stream: Optional[IO] = None) -> None:
    """``error: text`` on stderr, as an error-priority entry when stderr is the journal."""
    stream = stream or sys.stderr
    prefix = f"<{syslog_priority(logging.ERROR)}>" if under_journald(stream) else ""
    print(f"{prefix}error: {text}", file=stream)


def configure(level: int, stream: Optional[IO] = None) -> None:
    """Log to ``stream`` (stderr) at ``level``, in the journal's format when it is the journal."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if under_journald(stream) else logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
