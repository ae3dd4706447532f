"""How ``cloudmanagers call`` prints replies: stable, aligned, readable by people and by scripts.

A reply prints as two columns, fixed rows first (agent, cloud manager, result and, on failure,
error), then the status keys in sorted order. Lists of objects (images) print as a table under
their key; other nested values print as compact JSON. ``--json`` prints the raw reply instead.
"""

import json
from typing import Any, Dict, List, Sequence, Tuple


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
        return ", ".join(str(item) for item in value) if value else "-"
    return json.dumps(value, sort_keys=True)


def table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append(indent + "  ".join(padded + [row[-1]]).rstrip())
    return "\n".join(lines)


def _object_list(key: str, items: List[Dict[str, Any]]) -> str:
    columns = sorted({column for item in items for column in item})
    rows = [[column.upper() for column in columns]]
    rows += [[_cell(item.get(column)) for column in columns] for item in items]
    return f"{key} ({len(items)}):\n" + table(rows, indent="  ")


def _is_object_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def reply_text(reply: Dict[str, Any]) -> str:
    """One reply as a key/value table (plus a table per list of objects)."""
    status = reply.get("status") if isinstance(reply.get("status"), dict) else {}
    rows: List[Tuple[str, str]] = [
        ("agent", _cell(reply.get("uuid"))),
        ("cloudmanager", _cell(reply.get("resource_id"))),
        ("result", "error" if "error" in reply else "ok"),
    ]
    if "error" in reply:
        rows.append(("error", _cell(reply["error"])))
    blocks = []
    fixed = dict(rows)
    for key in sorted(status):
        if fixed.get(key) == _cell(status[key]):
            continue  # the status repeats a fixed row (its cloudmanager): print it once
        if _is_object_list(status[key]):
            blocks.append(_object_list(key, status[key]))
        else:
            rows.append((key, _cell(status[key])))
    return "\n".join([table(rows)] + blocks)


def ping_text(replies: Sequence[Tuple[Dict[str, Any], float]], window: float) -> str:
    """The agents that answered a ping, by uuid, with their version and reply time."""
    rows = [("AGENT", "VERSION", "REPLY_MS")]
    for reply, seconds in sorted(replies, key=lambda pair: str(pair[0].get("uuid"))):
        rows.append((_cell(reply.get("uuid")), _cell(reply.get("version")), f"{seconds * 1000:.0f}"))
    return table(rows) + f"\n{len(replies)} agent(s) answered within {window:g} s"


def json_text(value: Any) -> str:
    """Raw replies for scripts: sorted keys, two-space indent."""
    return json.dumps(value, sort_keys=True, indent=2)
