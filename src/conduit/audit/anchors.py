"""Anchors: where a journal's end is held outside the gateway's own folder.

Everything in the journal folder, ``checkpoint.json`` included, is under the
control of whoever is root on the gateway: they can cut records off the end
and put back an earlier genuine checkpoint as the "latest", and the chain and
signatures still verify. What they cannot do is reach into a copy held
elsewhere. An anchor is such a copy of a signed checkpoint:

* ``--anchor SEQ:HASH`` -- a checkpoint's seq and the SHA-256 of its journal
  line (``seq`` and ``hash`` of ``checkpoint.json``), written down by hand or
  by a script;
* ``--anchor-from FILE`` -- a SIEM's received log (RFC 5424 lines with the
  JSON record, or CEF lines): the newest checkpoint found in it;
* ``[audit] anchor_dirs`` -- folders (another disk, a mounted share owned by
  someone else) the gateway writes each checkpoint's state to, as
  ``checkpoint.json``; verify reads them from the same configuration.

``audit verify`` then fails when the journal ends before an anchored
checkpoint or holds a different record at its seq.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from conduit.audit.events import Record, digest, encode
from conduit.audit.formats import parse_cef

log = logging.getLogger("conduit.audit")
STATE_FILE = "checkpoint.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Anchor:
    """A checkpoint the journal must reach: its seq and what is known of it."""

    seq: int
    source: str
    hash: str | None = None  # SHA-256 of the checkpoint's journal line
    head_hash: str | None = None  # the head it sealed (its prev)
    record: Record | None = None  # the whole checkpoint record, when known


def parse(text: str) -> Anchor:
    """``SEQ:HASH`` as given to ``--anchor``; ValueError with what is wrong."""
    seq_text, _, hash_ = text.strip().partition(":")
    if not seq_text.isdigit() or int(seq_text) < 1 or not _HEX64.match(hash_.lower()):
        raise ValueError(f"{text!r}: expected SEQ:HASH (a seq and 64 hex digits)")
    return Anchor(int(seq_text), f"--anchor {seq_text}", hash=hash_.lower())


def _from_record(record: Record, source: str) -> Anchor | None:
    if record.get("type") != "audit.checkpoint" or not isinstance(record.get("seq"), int):
        return None
    try:
        line_hash: str | None = digest(encode(record))
    except (TypeError, ValueError):
        line_hash = None
    return Anchor(record["seq"], source, line_hash, str(record.get("prev") or "") or None, record)


def from_siem_log(path: Path) -> Anchor | None:
    """The newest checkpoint in a SIEM's received log (RFC 5424 JSON or CEF lines)."""
    best: Anchor | None = None
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if "audit.checkpoint" not in line:
                continue
            found = _parse_line(line.rstrip("\r\n"), f"{path.name}:{number}")
            if found is not None and (best is None or found.seq > best.seq):
                best = found
    return best


def _parse_line(line: str, where: str) -> Anchor | None:
    cef_at = line.find("CEF:0|")
    if cef_at >= 0:
        try:
            _, ext = parse_cef(line[cef_at:])
            extra = json.loads(ext.get("cs6", "{}"))
            seq = int(ext["externalId"])
        except (KeyError, ValueError):
            return None
        if ext.get("act") != "audit.checkpoint" or not isinstance(extra, dict):
            return None
        head = extra.get("head_hash")
        return Anchor(seq, f"SIEM log {where}", head_hash=head if isinstance(head, str) else None)
    start = line.find("{")
    if start < 0:
        return None
    with contextlib.suppress(ValueError):
        record = json.loads(line[start:])
        if isinstance(record, dict):
            return _from_record(record, f"SIEM log {where}")
    return None


def from_dirs(dirs: list[Path]) -> list[Anchor | str]:
    """The checkpoint state in each anchor folder, or a message saying what is wrong."""
    found: list[Anchor | str] = []
    for folder in dirs:
        path = folder / STATE_FILE
        try:
            state = json.loads(path.read_bytes())
            record = state["record"]
            anchor = _from_record(record, f"anchor {path}")
        except FileNotFoundError:
            found.append(f"anchor {path} is missing: the gateway writes each checkpoint there")
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            found.append(f"anchor {path} cannot be read: {exc}")
            continue
        if anchor is None:
            found.append(f"anchor {path} holds no checkpoint record")
        else:
            found.append(anchor)
    return found


def write(dirs: list[Path], data: bytes) -> None:
    """Write the checkpoint state into each anchor folder (atomically, fsynced).

    A folder that cannot be written is logged and skipped: the journal itself
    has the checkpoint, and verify reports the stale anchor as older.
    """
    for folder in dirs:
        try:
            tmp = folder / (STATE_FILE + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, folder / STATE_FILE)
        except OSError as exc:
            log.error("audit anchor %s cannot be written: %s", folder, exc)
