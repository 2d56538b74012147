"""The defender's table in ``state.sqlite``, as the gateway and ``conduit defender`` share it.

One row per source worth remembering (a ban in force, a ban history, a score
written at a clean shutdown). The gateway writes it (:mod:`conduit.auth.defender`);
the CLI reads it and marks unbans (``unbanned_by``), which the gateway applies
and journals. Neither needs the other running.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from conduit.state import StateDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS defender_sources (
    source TEXT PRIMARY KEY,      -- an IPv4 address or an IPv6 /64
    score REAL NOT NULL,          -- at scored_at
    scored_at REAL NOT NULL,      -- Unix time
    bans INTEGER NOT NULL,        -- bans in a row (the next one lasts longer)
    banned_until REAL NOT NULL,   -- Unix time; 0: not banned
    last_ban REAL NOT NULL,       -- Unix time the last ban began; 0: never
    ban_score REAL NOT NULL,      -- the score that earned the last ban
    reasons TEXT NOT NULL,        -- JSON {offence: count} behind the last ban
    unbanned_by TEXT              -- set by `conduit defender unban` until journalled
);
"""


def when(at: float) -> str:
    """Unix time as ISO 8601 UTC (seconds), as the journal and the CLI show it."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(reasons: Counter[str] | dict[str, int]) -> str:
    """``auth_failed=7, no_auth=2``: what the score is made of, largest first."""
    return ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def reasons_of(text: object) -> dict[str, int]:
    """The ``reasons`` column (JSON ``{offence: count}``); empty if unreadable."""
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int)}


@dataclass(frozen=True)
class Row:
    """One source as the table has it (``conduit defender list``)."""

    source: str
    score: float  # the table: when last written (a ban, a clean shutdown); live: now
    ban_score: float
    bans: int
    banned_until: float
    last_ban: float
    reasons: dict[str, int]
    unban_pending: bool


def rows(db: StateDB) -> list[Row]:
    """Every source in the table, banned ones first, latest ban first."""
    db.ensure(SCHEMA)
    found = [
        Row(
            str(r["source"]),
            float(r["score"]),
            float(r["ban_score"]),
            int(r["bans"]),
            float(r["banned_until"]),
            float(r["last_ban"]),
            reasons_of(r["reasons"]),
            r["unbanned_by"] is not None,
        )
        for r in db.query("SELECT * FROM defender_sources")
    ]
    found.sort(key=lambda r: (-r.banned_until, -r.last_ban, r.source))
    return found


def request_unban(db: StateDB, source: str, by: str, now: float | None = None) -> float:
    """Lift ``source``'s ban in the table and forget its history; the gateway
    journals it (see :meth:`Defender.take_unbans`). Returns when the ban would
    have ended; LookupError if ``source`` is not banned."""
    db.ensure(SCHEMA)
    now = time.time() if now is None else now
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT banned_until FROM defender_sources WHERE source = ? AND banned_until > ? "
            "AND unbanned_by IS NULL",
            (source, now),
        ).fetchone()
        if row is None:
            raise LookupError(source)
        conn.execute(
            "UPDATE defender_sources SET score = 0, bans = 0, banned_until = 0, last_ban = 0, "
            "unbanned_by = ? WHERE source = ?",
            (by, source),
        )
    return float(row["banned_until"])
