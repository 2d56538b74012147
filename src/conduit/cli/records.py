"""How a journal record is shown to a person: one line per event, escaped.

Every value a client chose (user names, paths, reasons) may hold control
characters, bidi marks or bytes that are not UTF-8; on a terminal they are
shown as escapes, so a hostile name cannot move the cursor, recolour the
screen or reorder what an auditor reads. A CSV export gets the same escapes
and is defused against spreadsheet formulas (CSV injection).
"""

from __future__ import annotations

import json

from conduit.audit.events import Record
from conduit.names import escape


def safe(value: object) -> str:
    """A value for a terminal: controls, bidi controls and bad bytes shown as escapes."""
    return escape(value)


def shown_path(record: Record) -> str:
    """The record's path, escaped; a rename as ``old -> new``."""
    path = safe(record.get("path") or record.get("new_path") or "")
    old = record.get("old_path")
    if old is not None and old != record.get("path"):
        return f"{safe(old)} -> {path}"
    return path


def summary(record: Record) -> str:
    """One line per event: who, where, what (a rename's old name too), how much, which bytes."""
    path = shown_path(record)
    extra = record.get("error") or record.get("reason") or ""
    who = record.get("principal") or record.get("user_given") or "-"
    size = record.get("bytes")
    digest = record.get("sha256")
    parts = [
        safe(record["ts"]),
        f"#{safe(record['seq'])}",
        safe(record["type"]),
        safe(record["outcome"]),
        safe(who),
        safe(record.get("source") or "-"),
        path,
        f"bytes={safe(size)}" if size is not None else "",
        f"sha256={safe(digest)}" if digest else "",
        f"({safe(extra)})" if extra else "",
    ]
    return " ".join(p for p in parts if p != "")


class Shown(str):
    """Text already escaped for the terminal (not to be escaped twice)."""


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    if value is None:
        return ""
    # Escaped as on the terminal (unambiguous, reversible): a CSV is read by
    # people too. The exact bytes are in the journal and in --format jsonl.
    text = escape(value if isinstance(value, str) else json.dumps(value))
    # spreadsheets run cells starting with these as formulas (CSV injection)
    return "'" + text if text.startswith(_FORMULA) else text
