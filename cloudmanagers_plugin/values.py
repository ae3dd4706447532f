"""How request values are read back, echoed and logged, shared by the controller and the agent.

A value a requester sent is normalised once, the same way wherever it is read (the agent's
per-VM ordering key and the controller must agree on which VM a name means); it is echoed in a
reply or an error only as a short, marked prefix, so a 20 MB value is not sent back or kept;
and it is logged only with its control characters escaped, so it cannot forge a log line.
Booleans have one vocabulary, in a request and in both configuration files, so a word that means
true in one place never means "invalid" in another.
"""

from typing import Any, Optional

from .errors import BadRequest

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


TRUE_WORDS = ("1", "y", "yes", "true", "on")
FALSE_WORDS = ("0", "n", "no", "false", "off", "")
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number",
               str: "a string", type(None): "null"}


def json_type(value: Any) -> str:
    """How JSON names the type of ``value`` ("a string", "an array"...), for error messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def parse_bool(value: Any) -> bool:
    """A boolean from a request (JSON) or a configuration file (text): true/false, yes/no, y/n,
    on/off, 1/0 in any case, "" as false, a JSON boolean or a whole number (0 is false).

    ValueError says why otherwise; the caller puts where the value was in front of it.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    shown = f"'{echo(value)}'" if isinstance(value, str) else json_type(value)
    raise ValueError(f"must be true or false (or yes/no, on/off, 1/0); {shown} is not a boolean")


def checked_text(what: str, value: str, max_length: int = MAX_TEXT) -> str:
    """``value``, unless OpenStack cannot take it: too long, or not encodable (a lone surrogate)."""
    if len(value) > max_length:
        raise BadRequest(f"{what} is too long ({len(value)} characters; at most {max_length})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid text (it holds a lone surrogate)") from None
    return value


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
