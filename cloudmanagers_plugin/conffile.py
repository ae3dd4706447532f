"""Edit the cloud managers file in place: some keys of one section, nothing else.

configparser would rewrite the whole file and drop its comments, so the edit works on lines: it
replaces, adds or removes ``key = value`` lines of one section and leaves every other line as
it was. The new text replaces the file atomically (a temporary file in the same folder, then
``os.replace``) with the old file's owner and mode, so a reader (a running agent) sees either the
old file or the new one, never half of it.
"""

import os
import re
import tempfile
from typing import Dict, List, Optional

from .errors import ConfigError

_HEADER = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*(?:[#;].*)?$")


def set_keys(text: str, section: str, updates: Dict[str, Optional[str]]) -> str:
    """``text`` with ``updates`` applied to ``section``: a value sets the key (in place if the key is
    there, else after the section's last key), None removes it. Other lines are kept as they are."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((n for n, line in enumerate(lines) if (m := _HEADER.match(line)) and m["name"].strip() == section),
                 None)
    if start is None:
        raise ConfigError(f"section [{section}] is not in the file")
    end = next((n for n in range(start + 1, len(lines)) if _HEADER.match(lines[n])), len(lines))
    body = lines[start + 1:end]
    pending = dict(updates)
    kept: List[str] = []
    skipping = False  # continuation lines of a replaced or removed value
    for line in body:
        if skipping and line[:1] in (" ", "\t") and line.strip():
            continue
        skipping = False
        match = re.match(r"^(?P<key>[^#;\s][^=:]*?)\s*[=:]", line)
        key = match["key"].strip().lower() if match else None
        if key in pending:
            value = pending.pop(key)
            skipping = True
            if value is not None:
                kept.append(f"{match['key']} = {value}\n")
            continue
        kept.append(line)
    last_key = max((n for n, line in enumerate(kept) if re.match(r"^[^#;\s\[][^=:]*[=:]", line)), default=-1)
    added = [f"{key} = {value}\n" for key, value in pending.items() if value is not None]
    kept[last_key + 1:last_key + 1] = added
    return "".join(lines[:start + 1] + kept + lines[end:])


def replace_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, keeping owner and mode."""
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o600, None
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            if owner and owner != (os.geteuid(), os.getegid()):
                os.fchown(handle.fileno(), *owner)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
