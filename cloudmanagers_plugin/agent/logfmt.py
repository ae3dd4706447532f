"""logfmt: ``key=value`` pairs that log tools (Loki, lnav, ``grep``) split reliably.

A value that is empty or holds a space, a quote, an ``=``, a backslash or a non-printable
character is double-quoted with JSON escapes, so a sentence with spaces stays one value and a
control character sent by a requester cannot forge a second log line.
"""

from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def value(raw: Any) -> str:
    """One value, quoted only when it must be."""
    text = "" if raw is None else str(raw)
    if text and text.isprintable() and not any(char in text for char in ' "=\\'):
        return text
    return '"' + "".join(_escaped(char) for char in text) + '"'


def line(**fields: Any) -> str:
    """``key=value`` pairs in the given order."""
    return " ".join(f"{key}={value(raw)}" for key, raw in fields.items())
