"""Downloads scanned before the first byte goes out (``on_read = "scan"``).

A conduit's ``on_read`` says how a download through it meets ``require``:
``released`` serves only bytes committed from quarantine having met every
obligation; ``scan`` runs the conduit's stream checks (the malware scan, the
true-type check) over the file as it is about to be served. Only checks
that look at the bytes alone can run that way: ``signature`` and
``approval`` need the quarantine, so a conduit requiring them keeps
``released`` (the config refuses anything else).

A scan costs as long as clamd needs for the file, so a clean verdict is kept
in the state database (``read_verdicts``) under the file's SHA-256 and the
checks' *identity*: clamd's address and ``VERSION`` answer (engine version,
and for official databases their version and date), libmagic's version and
the conduit's allowed types. The same bytes through the same checks are
served on that verdict without a rescan; a changed file (another hash), a
new clamd engine or database version, another types list or a verdict older
than ``[inspect.scan] verdict_cache`` is scanned again. clamd does not name
a database without a version (an operator's own ``.ndb``/``.hdb`` files) in
its ``VERSION``: ``verdict_cache`` bounds how long such a verdict survives a
change of them. A check that cannot say who it is (clamd not answering)
reuses nothing: the file is scanned, and a scanner that is down refuses it.
Only verdicts where every check passed are kept; a refused file is scanned
(and refused, and journalled) again at every try. Looking a verdict up costs
a pass over the file (its hash); when no kept verdict could match (none by
these checks for a file of this size) the file is hashed and scanned in one
pass instead of two.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from conduit.inspect.base import State, Stream, Verdict
from conduit.state import StateDB

CHUNK = 1024 * 1024
SCHEMA = """
CREATE TABLE IF NOT EXISTS read_verdicts (
    sha256 TEXT NOT NULL,
    checks TEXT NOT NULL,
    at REAL NOT NULL,
    verdicts TEXT NOT NULL,
    size INTEGER,
    PRIMARY KEY (sha256, checks)
);
"""

#: reads ``length`` bytes at ``offset`` of the file being served
Read = Callable[[int, int], Awaitable[bytes]]


@dataclass(frozen=True)
class Cleared:
    """What the download's ``started`` record says about its checks."""

    sha256: str
    size: int
    verdicts: tuple[Verdict, ...]
    scanned_at: float  # when the verdict was made
    cached: bool  # reused, not scanned for this download

    def fields(self) -> dict[str, object]:
        checks = " ".join(f"{v.check}:{v.state}:{v.duration:.3f}s" for v in self.verdicts)
        return {
            "sha256_scanned": self.sha256,
            "checks": checks,
            "inspected": "cached" if self.cached else "scanned",
            "scanned_at": round(self.scanned_at, 3),
        }


class Refused(Exception):
    """A check failed (or could not run): ``verdict`` says which and why."""

    def __init__(self, verdict: Verdict, sha256: str) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict
        self.sha256 = sha256


class VerdictCache:
    """Clean verdicts by (SHA-256, checks' identity), in the state database."""

    def __init__(self, db: StateDB, keep_for: float) -> None:
        self.db = db
        self.keep_for = keep_for
        db.ensure(SCHEMA)
        if not self._has_size(db):  # a state database from before sizes were kept
            with db.transaction() as tx:
                if not self._has_size(db):  # another process may have just added it
                    tx.execute("ALTER TABLE read_verdicts ADD COLUMN size INTEGER")

    @staticmethod
    def _has_size(db: StateDB) -> bool:
        return any(row["name"] == "size" for row in db.query("PRAGMA table_info(read_verdicts)"))

    def may_hold(self, checks: str, size: int, now: float) -> bool:
        """Whether a verdict by these checks on a file of ``size`` bytes may be kept.

        Asked before reading the file: when none can be, the file is hashed
        and scanned in one pass instead of hashed first for the lookup. A
        row without a size (kept before sizes were) may be of any size.
        """
        if self.keep_for <= 0:
            return False
        rows = self.db.query(
            "SELECT 1 FROM read_verdicts WHERE checks = ? AND at > ?"
            " AND (size = ? OR size IS NULL) LIMIT 1",
            (checks, now - self.keep_for, size),
        )
        return bool(rows)

    def get(self, sha256: str, checks: str, now: float) -> tuple[float, list[Verdict]] | None:
        if self.keep_for <= 0:
            return None
        rows = self.db.query(
            "SELECT at, verdicts FROM read_verdicts WHERE sha256 = ? AND checks = ? AND at > ?",
            (sha256, checks, now - self.keep_for),
        )
        if not rows:
            return None
        found = [
            Verdict(v["check"], State(v["state"]), v["reason"], v["detail"], v["duration"])
            for v in json.loads(rows[0]["verdicts"])
        ]
        if not found or not all(v.passed for v in found):
            return None  # never kept so; a row written by other hands clears nothing
        return float(rows[0]["at"]), found

    def put(
        self, sha256: str, checks: str, verdicts: Sequence[Verdict], now: float, size: int
    ) -> None:
        if self.keep_for <= 0:
            return
        text = json.dumps(
            [
                {
                    "check": v.check,
                    "state": str(v.state),
                    "reason": v.reason,
                    "detail": v.detail,
                    "duration": round(v.duration, 6),
                }
                for v in verdicts
            ]
        )
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO read_verdicts (sha256, checks, at, verdicts, size)"
                " VALUES (?, ?, ?, ?, ?)",
                (sha256, checks, now, text, size),
            )
            tx.execute("DELETE FROM read_verdicts WHERE at < ?", (now - self.keep_for,))


async def identity(streams: Sequence[Stream]) -> str | None:
    """Who the checks are, for the cache key; None if any cannot say."""
    parts = []
    for stream in streams:
        ask = getattr(stream, "identity", None)
        if ask is None:
            return None
        try:
            parts.append(str(await ask()))
        except Exception:  # clamd down or answering garbage, libmagic missing
            return None
    return "\n".join(parts)


async def _hash(read: Read, size: int, streams: Sequence[Stream] = ()) -> tuple[str, int]:
    digest, offset = hashlib.sha256(), 0
    while offset < size:
        chunk = await read(offset, min(CHUNK, size - offset))
        if not chunk:
            break
        digest.update(chunk)
        for stream in streams:
            await stream.feed(chunk)
        offset += len(chunk)
    return digest.hexdigest(), offset


async def clear(read: Read, size: int, streams: Sequence[Stream], cache: VerdictCache) -> Cleared:
    """Scan the file ``read`` serves (or reuse a clean verdict on the same
    bytes by the same checks); :class:`Refused` unless every check passed.

    A verdict can only be reused after the whole file is hashed, so a lookup
    costs a read of the file. It is skipped when no kept verdict could match
    (checks without an identity, no verdict by these checks on a file of this
    size): the file is then hashed and scanned in one pass. Either way the
    verdict is about exactly the bytes hashed with it.
    """
    checks = await identity(streams)
    if checks is not None and cache.may_hold(checks, size, time.time()):
        sha256, length = await _hash(read, size)
        now = time.time()
        hit = cache.get(sha256, checks, now)
        if hit is not None:
            for stream in streams:
                await stream.abort()
            return Cleared(sha256, length, tuple(hit[1]), hit[0], True)
    return await _scan(read, size, streams, cache, checks)


async def _scan(
    read: Read, size: int, streams: Sequence[Stream], cache: VerdictCache, checks: str | None
) -> Cleared:
    now = time.time()
    try:
        # the verdict is about the bytes scanned now: their hash, not a first pass's
        sha256, length = await _hash(read, size, streams)
    except BaseException:
        for stream in streams:
            await stream.abort()
        raise
    verdicts = await asyncio.gather(*(_finish(s) for s in streams))
    failed = [v for v in verdicts if not v.passed]
    if failed:
        raise Refused(failed[0], sha256)
    if checks is not None:
        cache.put(sha256, checks, verdicts, now, length)
    return Cleared(sha256, length, tuple(verdicts), now, False)


async def _finish(stream: Stream) -> Verdict:
    started = time.monotonic()
    try:
        v = await stream.finish()
    except Exception as exc:  # a check that breaks must not pass the file
        v = Verdict(stream.check, State.FAILED, f"{stream.check}: check failed", str(exc))
    return Verdict(v.check, v.state, v.reason, v.detail, v.duration or time.monotonic() - started)
