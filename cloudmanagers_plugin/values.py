"""How request values are read back, echoed and logged, shared by the controller and the agent.

A value a requester sent is normalised once, the same way wherever it is read (the agent's
per-VM ordering key and the controller must agree on which VM a name means); it is echoed in a
reply or an error only as a short, marked prefix, so a 20 MB value is not sent back or kept;
and it is logged only with its control characters escaped, so it cannot forge a log line.
"""

from typing import Any, Optional

MAX_TEXT = 255  # Nova's limit for names, key names, flavor and image references
ECHOED = 64  # longest request value copied into a reply or an error message


def text_value(value: Any) -> Optional[str]:
    """A string attribute as the controller reads it: text or a number, stripped; else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    try:
        return str(value).strip()
    except ValueError:  # an integer too long to print (over 4,300 digits)
        return None


def echo(value: Any, limit: int = ECHOED) -> str:
    """``value`` as text, cut to ``limit`` characters with a marker saying how long it was."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(cut, {len(text)} characters)"


def printable(value: Any) -> str:
    """``value`` for a log line: every control, format or separator character escaped.

    Newlines and carriage returns would start a forged line; bidi overrides and lone surrogates
    would make the line lie or fail to encode.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char == " " else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
