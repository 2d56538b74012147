"""Quarantine items: one durable row per file held back from its final name.

The rows live in :class:`conduit.state.StateDB` (``quarantine_items``), so a
gateway that is killed keeps them, and ``conduit approve`` (another process)
and the running gateway share them through SQLite's own locking. The bytes
live beside them in ``DATA_DIR/quarantine`` (see :mod:`.quarantine`).

States, and who moves an item between them::

    pending  --evidence arrives, checks pass-->  held / committed
    pending  --signature_grace passes-->         rejected      (gateway sweep)
    held     --conduit approve (signed)-->       approved --> committed (gateway)
    held     --conduit reject (signed)-->        rejected
    held     --approval_expiry passes-->         expired       (gateway sweep)
    any      --a check fails-->                  rejected
    rejected/expired --conduit quarantine purge--> purged (bytes removed)

A decision made by the CLI is a *request* on the row (``request``): the
gateway verifies it against the policy in force, journals it and carries it
out; the CLI never writes the journal (one writer keeps the hash chain whole).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from conduit.state import StateDB


class ItemState(StrEnum):
    PENDING = "pending"  # waiting for its evidence (signature, manifest)
    HELD = "held"  # every check passed; waiting for an approval
    APPROVED = "approved"  # approved; the gateway commits it
    REJECTED = "rejected"  # a check failed, an approver rejected it, or its grace passed
    COMMITTED = "committed"  # under its final name
    EXPIRED = "expired"  # nobody approved it in time
    PURGED = "purged"  # its bytes were removed from quarantine


#: States in which an item still waits for something (listed by ``conduit approvals``).
OPEN = (ItemState.PENDING, ItemState.HELD, ItemState.APPROVED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine_items (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    uploader TEXT NOT NULL,
    source TEXT NOT NULL,
    conduit TEXT NOT NULL,
    path TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    needs_approval INTEGER NOT NULL,
    deadline REAL,
    verdicts TEXT NOT NULL DEFAULT '[]',
    evidence TEXT NOT NULL DEFAULT '[]',
    decision TEXT,
    request TEXT,
    transfer TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS quarantine_items_state ON quarantine_items(state);
CREATE INDEX IF NOT EXISTS quarantine_items_path ON quarantine_items(path);
"""


def new_id() -> str:
    """A short id a person can type: ``q-`` and 12 hex digits."""
    return f"q-{secrets.token_hex(6)}"


@dataclass(slots=True)
class Item:
    """One quarantined file as the store holds it."""

    id: str
    created: float
    updated: float
    uploader: str
    source: str
    conduit: str
    path: str  # the virtual path it is meant for, e.g. /firmware/rtu.bin
    target_kind: str  # "area" or "device"
    target_name: str
    size: int
    sha256: str
    state: ItemState
    reason: str = ""
    needs_approval: bool = False
    deadline: float | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    transfer: str = ""

    @property
    def checks(self) -> str:
        """The checks and their answers, e.g. ``scan:passed type:passed``."""
        return " ".join(f"{v['check']}:{v['state']}" for v in self.verdicts) or "-"

    def public(self) -> dict[str, Any]:
        """What ``--json`` prints (everything but the CLI's pending request)."""
        out = {k: getattr(self, k) for k in COLUMNS if k != "request"}
        out["state"] = str(self.state)
        return out


COLUMNS = tuple(f.name for f in fields(Item))
_JSON = ("verdicts", "evidence", "decision", "request")


def _item(row: Any) -> Item:
    data = dict(row)
    for key in _JSON:
        data[key] = json.loads(data[key]) if data[key] is not None else None
    data["state"] = ItemState(data["state"])
    data["needs_approval"] = bool(data["needs_approval"])
    return Item(**data)


class Items:
    """The ``quarantine_items`` table: small, explicit reads and guarded updates."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.ensure(SCHEMA)

    def add(self, item: Item) -> None:
        row = {k: getattr(item, k) for k in COLUMNS}
        for key in _JSON:
            row[key] = None if row[key] is None else json.dumps(row[key], sort_keys=True)
        row["state"] = str(item.state)
        row["needs_approval"] = int(item.needs_approval)
        names = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self.db.transaction() as tx:
            tx.execute(f"INSERT INTO quarantine_items ({names}) VALUES ({marks})", row)  # noqa: S608

    def get(self, item_id: str) -> Item | None:
        rows = self.db.query("SELECT * FROM quarantine_items WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    def find(self, *states: ItemState, path: str | None = None) -> list[Item]:
        """Items in ``states`` (all: none given), oldest first; ``path``: for that name only
        (exactly: names that differ only by case are different files)."""
        sql, params = "SELECT * FROM quarantine_items WHERE 1=1", []
        if states:
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            params += [str(s) for s in states]
        if path is not None:
            sql += " AND path = ?"
            params.append(path)
        return [_item(r) for r in self.db.query(sql + " ORDER BY created, id", params)]

    def requested(self) -> list[Item]:
        """Items with a CLI request the gateway has not carried out yet."""
        rows = self.db.query("SELECT * FROM quarantine_items WHERE request IS NOT NULL")
        return [_item(r) for r in rows]

    def move(
        self,
        item_id: str,
        to: ItemState,
        *,
        expect: tuple[ItemState, ...],
        sha256: str | None = None,
        **changes: Any,
    ) -> bool:
        """Set ``state`` (and ``changes``) only if the item is in one of ``expect``
        (and has ``sha256``): two deciders racing cannot both win."""
        values: dict[str, Any] = {"state": str(to), "updated": time.time(), **changes}
        for key in _JSON:
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key], sort_keys=True)
        sets = ", ".join(f"{k} = :{k}" for k in values)
        where = f"id = :_id AND state IN ({', '.join(f':_s{i}' for i in range(len(expect)))})"
        params = {**values, "_id": item_id, **{f"_s{i}": str(s) for i, s in enumerate(expect)}}
        if sha256 is not None:
            where += " AND sha256 = :_sha"
            params["_sha"] = sha256
        with self.db.transaction() as tx:
            cursor = tx.execute(f"UPDATE quarantine_items SET {sets} WHERE {where}", params)  # noqa: S608
            return cursor.rowcount == 1

    def ask(self, item_id: str, request: dict[str, Any], *, expect: tuple[ItemState, ...]) -> bool:
        """Leave a request (approve, reject, release, purge) for the gateway."""
        with self.db.transaction() as tx:
            marks = ", ".join("?" for _ in expect)
            sql = "UPDATE quarantine_items SET request = ?, updated = ? WHERE id = ? AND "
            cursor = tx.execute(
                sql + f"request IS NULL AND state IN ({marks})",
                (json.dumps(request, sort_keys=True), time.time(), item_id, *map(str, expect)),
            )
            return cursor.rowcount == 1

    def clear_request(self, item_id: str, **changes: Any) -> None:
        values = {"request": None, "updated": time.time(), **changes}
        for key in _JSON:
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key], sort_keys=True)
        if "state" in values:
            values["state"] = str(values["state"])
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with self.db.transaction() as tx:
            tx.execute(
                f"UPDATE quarantine_items SET {sets} WHERE id = :_id",  # noqa: S608
                {**values, "_id": item_id},
            )
