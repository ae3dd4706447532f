"""How ``cloudmanagers call`` prints replies: stable, aligned, readable by people and by scripts.

A reply prints as two columns, fixed rows first (agent, cloud manager, result and, on failure,
error), then the status keys in sorted order. Lists of objects (images, servers) print as a
table of their plain columns, id and name first, as ``openstack ... list`` does (nested values
such as image links only in ``--json``); other nested values print as compact JSON.
"""

import json
import re
from typing import Any, Dict, List, Sequence, Tuple

_FIRST_COLUMNS = ("id", "name", "status")
# How an error names an attribute, and how the same thing is said on the ``call`` command line.
_CLI_WORDING = (
    (re.compile(r"\bsend force: true\b"), "pass --force"),
    (re.compile(r"\(status: (\w+)\)"), r"(--status \1)"),
    (re.compile(r"'?\b(revert|confirm)'?: true\b"), r"--attr \1=true"),
    (re.compile(r"\battribute '(name|flavor|image|status|wait|force)'"), r"--\1"),
)


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
    plain = {column for item in items for column, value in item.items() if not isinstance(value, (list, dict))}
    columns = [column for column in _FIRST_COLUMNS if column in plain]
    columns += sorted(plain - set(columns))
    rows = [[column.upper() for column in columns]]
    rows += [[_cell(item.get(column)) for column in columns] for item in items]
    return f"{key} ({len(items)}):\n" + table(rows, indent="  ")


def _is_object_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def cli_wording(error: str) -> str:
    """An error reply's text with attributes named as ``cloudmanagers call`` options (``--force``)."""
    for pattern, replacement in _CLI_WORDING:
        error = pattern.sub(replacement, error)
    return error


def reply_text(reply: Dict[str, Any], cli: bool = False) -> str:
    """One reply as a key/value table (plus a table per list of objects).

    ``cli``: the request came from ``cloudmanagers call``, so the error names its options.
    """
    status = dict(reply["status"]) if isinstance(reply.get("status"), dict) else {}
    if _is_object_list(status.get("servers")):
        status.pop("VMs", None)  # the same VMs, with their ids and states
        status.pop("vm_details", None)  # the same VMs again, every key: --json shows them
    rows: List[Tuple[str, str]] = [
        ("agent", _cell(reply.get("uuid"))),
        ("cloudmanager", _cell(reply.get("resource_id"))),
        ("result", "error" if "error" in reply else "ok"),
    ]
    if "error" in reply:
        rows.append(("error", cli_wording(_cell(reply["error"])) if cli else _cell(reply["error"])))
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


def broadcast_summary(answered: int, errors: int, window: float) -> str:
    """'2 agents answered, 1 error' (within the window)."""
    agents = f"{answered} agent{'s' if answered != 1 else ''}"
    return f"{agents} answered within {window:g} s, {errors} error{'s' if errors != 1 else ''}"


def json_text(value: Any) -> str:
    """Raw replies for scripts: sorted keys, two-space indent."""
    return json.dumps(value, sort_keys=True, indent=2)


def event_line(message: Dict[str, Any], received: str) -> str:
    """One unsolicited message as ``cloudmanagers watch`` prints it: one line, fixed columns first.

    A change event: ``TIME SECTION #SEQUENCE EVENT VM STATUS`` then ``task=``, ``flavor=``,
    ``fault=`` (in ERROR) and ``id=``; a compliance message: ``TIME SECTION MSG_TYPE VM`` then the
    desired and current status and the reason. Values print as in a reply (``-`` for none).
    """
    status = message.get("status") if isinstance(message.get("status"), dict) else {}
    msg_type = _cell(message.get("msg_type"))
    head = [received, _cell(message.get("resource_id"))]
    if msg_type == "status":
        head += [f"#{_cell(status.get('sequence'))}", _cell(status.get("vm_event")), _cell(status.get("vm_name")),
                 _cell(status.get("vm_status"))]
        tail = [("task", status.get("vm_task_state")), ("flavor", status.get("vm_flavor_name"))]
        tail += [("fault", status["vm_fault"])] if status.get("vm_fault") else []
        tail += [("id", status.get("vm_id"))]
    else:
        current = message.get("current_status") if isinstance(message.get("current_status"), dict) else {}
        head += [msg_type, _cell(status.get("vm_name"))]
        tail = [("desired", status.get("vm_status")), ("current", current.get("vm_status"))]
        tail += [("reason", message["reason"])] if message.get("reason") else []
        tail += [("id", status.get("vm_id"))]
    return "  ".join(head) + "  " + " ".join(f"{key}={_quoted(_cell(value))}" for key, value in tail)


def _quoted(text: str) -> str:
    return json.dumps(text) if any(char.isspace() or char == '"' for char in text) else text
