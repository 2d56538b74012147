"""The quarantine: where a file through a conduit with obligations waits.

An upload through such a conduit never goes near its final name. Its bytes
stream into ``DATA_DIR/quarantine/.part-ID`` (0600, in a 0700 folder) while
the :class:`~conduit.inspect.base.Stream` checks see them in order; after the
last byte the file is fsynced and renamed to ``ID.data``, the whole-file
checks look at it and its evidence, and only then does its row
(:mod:`.items`) say what happens next: ``rejected`` (a check failed: the
client is refused with that check's reason), ``pending`` (its evidence has
not arrived), ``held`` (waiting for an approval) or ``approved`` (nothing
left to wait for: the gateway commits it now, through the target's backend,
as any upload).

A crash while receiving leaves a ``.part-`` file and no row: swept at
start-up. A crash after the rename but before the row leaves an ``ID.data``
without a row: swept too (its upload never reported success).

Evidence (:mod:`.evidence`) is received the same way into ``evidence/``
with a row in ``quarantine_evidence`` and handed to the checks of the
files of its folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from conduit.config.inspect import InspectConfig
from conduit.config.model import Obligation
from conduit.errors import Fault, StorageError, TransferRefused
from conduit.inspect.base import State, Stream, Subject, Verdict, WholeFileCheck
from conduit.inspect.evidence import classify, safe_name, subject_of
from conduit.inspect.items import OPEN, Item, Items, ItemState, new_id
from conduit.inspect.parts import PART, Part
from conduit.state import StateDB

#: What this gateway can enforce without the checks package: the quarantine
#: and the four-eyes approval. The checks add ``signature`` and ``scan``.
ENFORCEABLE = frozenset({Obligation.APPROVAL})
FOLDER = "quarantine"

EVIDENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine_evidence (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    uploader TEXT NOT NULL,
    path TEXT NOT NULL,
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    subject TEXT,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_evidence_folder ON quarantine_evidence(folder);
"""


class Checks(Protocol):
    """The checks a conduit's obligations ask for (built from the config by the
    checks package; :class:`NoChecks` when there are none)."""

    enforceable: frozenset[Obligation]

    def streams(self, conduit: str) -> list[Stream]: ...

    def whole_file(self, conduit: str) -> list[WholeFileCheck]: ...


class NoChecks:
    """Only the quarantine and the approval: no stream or whole-file check."""

    enforceable = ENFORCEABLE

    def streams(self, conduit: str) -> list[Stream]:
        return []

    def whole_file(self, conduit: str) -> list[WholeFileCheck]:
        return []


@dataclass(frozen=True, slots=True)
class Arrival:
    """Who sends what where, as the gateway knows it when the upload opens."""

    uploader: str
    source: str
    conduit: str  # the conduit's name
    path: str  # the virtual path, e.g. /firmware/rtu.bin
    target_kind: str
    target_name: str
    needs_approval: bool
    transfer: str


def verdict_row(v: Verdict) -> dict[str, Any]:
    return {
        "check": v.check,
        "state": str(v.state),
        "reason": v.reason,
        "detail": v.detail,
        "duration": round(v.duration, 6),
    }


class Quarantine:
    """The quarantine folder and its two tables."""

    def __init__(
        self, data_dir: Path, db: StateDB, config: InspectConfig, checks: Checks | None = None
    ) -> None:
        self.root = data_dir / FOLDER
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "evidence").mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self.db = db
        self.items = Items(db)
        db.ensure(EVIDENCE_SCHEMA)
        self.config = config
        self.checks: Checks = checks or NoChecks()

    def data(self, item_id: str) -> Path:
        return self.root / f"{item_id}.data"

    def evidence_file(self, evidence_id: str, name: str) -> Path:
        """``evidence/ID/NAME``: the client's base name is kept, because the
        checks pair a manifest with its signature by name (``SHA256SUMS`` and
        ``SHA256SUMS.sig``); the id folder keeps two uploads of one name apart."""
        return self.evidence_dir(evidence_id) / safe_name(name)

    def evidence_dir(self, evidence_id: str) -> Path:
        return self.root / "evidence" / safe_name(evidence_id)

    # -- receiving -------------------------------------------------------------------

    def receive(self, arrival: Arrival) -> Receiving:
        return Receiving(self, arrival, self.checks.streams(arrival.conduit))

    def receive_evidence(self, arrival: Arrival) -> EvidenceReceiving:
        return EvidenceReceiving(self, arrival)

    def sweep(self) -> int:
        """Remove what a crash left: partial files, and bytes no row speaks for."""
        removed = 0
        known = {i.id for i in self.items.find()}
        evidence = {r["id"] for r in self.db.query("SELECT id FROM quarantine_evidence")}
        for entry in self.root.iterdir():
            orphan = entry.name.startswith(PART) or (
                entry.name.endswith(".data") and entry.name[: -len(".data")] not in known
            )
            if orphan and entry.is_file():
                entry.unlink(missing_ok=True)
                removed += 1
        for entry in (self.root / "evidence").iterdir():
            if entry.name.startswith(PART) or entry.name not in evidence:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- evidence and checks ---------------------------------------------------------

    def evidence_for(self, path: str) -> dict[str, tuple[Path, ...]]:
        """Evidence kept for ``path``: its signatures, and its folder's manifests."""
        folder, name = posixpath.split(path)
        rows = self.db.query(
            "SELECT id, kind, name FROM quarantine_evidence WHERE folder = ? AND "
            "(subject = ? OR subject IS NULL) ORDER BY created, id",
            (folder, name),
        )
        found: dict[str, list[Path]] = {}
        for row in rows:
            found.setdefault(row["kind"], []).append(self.evidence_file(row["id"], row["name"]))
        return {kind: tuple(paths) for kind, paths in found.items()}

    async def judge(
        self, item: Item, streamed: list[Verdict]
    ) -> tuple[ItemState, str, list[Verdict]]:
        """Run the whole-file checks; the state the answers lead to, and why."""
        return self.decide(item, [*streamed, *await self.whole_file(item)])

    async def whole_file(self, item: Item) -> list[Verdict]:
        """The whole-file checks' verdicts on the kept ``ID.data`` and its evidence."""
        subject = Subject(
            self.data(item.id), item.path, item.sha256, item.size, self.evidence_for(item.path)
        )
        verdicts: list[Verdict] = []
        for check in self.checks.whole_file(item.conduit):
            started = time.monotonic()
            try:
                verdict = await check.verify(subject)
            except Exception as exc:  # a check that breaks must not pass the file
                why = f"{check.check}: check failed"
                verdict = Verdict(check.check, State.FAILED, why, str(exc))
            if not verdict.duration:
                verdict = Verdict(
                    verdict.check,
                    verdict.state,
                    verdict.reason,
                    verdict.detail,
                    time.monotonic() - started,
                )
            verdicts.append(verdict)
        return verdicts

    def decide(self, item: Item, verdicts: list[Verdict]) -> tuple[ItemState, str, list[Verdict]]:
        """The state every verdict together leads to, and why."""
        failed = [v for v in verdicts if v.state is State.FAILED]
        if failed:
            return ItemState.REJECTED, failed[0].reason, verdicts
        pending = [v for v in verdicts if v.state is State.PENDING]
        if pending:
            return ItemState.PENDING, pending[0].reason, verdicts
        if item.needs_approval:
            return ItemState.HELD, "waiting for approval", verdicts
        return ItemState.APPROVED, "every check passed; no approval required", verdicts

    def deadline(self, state: ItemState, now: float) -> float | None:
        if state is ItemState.PENDING:
            return now + self.config.signature_grace
        if state is ItemState.HELD:
            return now + self.config.approval_expiry
        return None

    async def rejudge(self, folder: str) -> list[Item]:
        """Pending items of ``folder`` looked at again (new evidence arrived);
        the ones whose state changed, as they are now."""
        changed = []
        for item in self.items.find(ItemState.PENDING):
            if posixpath.dirname(item.path) != folder:
                continue
            streamed = [
                Verdict(v["check"], State(v["state"]), v["reason"], v["detail"], v["duration"])
                for v in item.verdicts
                if v.get("stream")
            ]
            state, reason, verdicts = await self.judge(item, streamed)
            if state is ItemState.PENDING:
                continue
            rows = [verdict_row(v) | {"stream": v in streamed} for v in verdicts]
            deadline = self.deadline(state, time.time())
            if self.items.move(
                item.id,
                state,
                expect=(ItemState.PENDING,),
                reason=reason,
                verdicts=rows,
                deadline=deadline,
            ):
                moved = self.items.get(item.id)
                if moved is not None:
                    changed.append(moved)
        return changed

    def stale_evidence(self, now: float) -> list[dict[str, Any]]:
        """Evidence older than ``signature_grace`` that no waiting file of its
        folder may still need (a signature whose file never arrived)."""
        rows = self.db.query(
            "SELECT * FROM quarantine_evidence WHERE created < ?",
            (now - self.config.signature_grace,),
        )
        waiting = {posixpath.dirname(i.path) for i in self.items.find(*OPEN)}
        return [dict(r) for r in rows if r["folder"] not in waiting]

    def drop_evidence(self, evidence_id: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM quarantine_evidence WHERE id = ?", (evidence_id,))
        shutil.rmtree(self.evidence_dir(evidence_id), ignore_errors=True)

    def supersede(self, item: Item) -> list[str]:
        """Older items waiting for the same name are replaced by ``item``: an
        approver must never release an older file than the one last sent."""
        older = [
            i.id
            for i in self.items.find(ItemState.PENDING, ItemState.HELD, path=item.path)
            if i.id != item.id
        ]
        for old in older:
            self.items.move(
                old,
                ItemState.REJECTED,
                expect=(ItemState.PENDING, ItemState.HELD),
                reason=f"superseded by {item.id}",
            )
        return older


class Receiving(Part):
    """A payload upload into quarantine: a :class:`~conduit.storage.base.WriteHandle`."""

    def __init__(self, quarantine: Quarantine, arrival: Arrival, streams: list[Stream]) -> None:
        super().__init__(quarantine.root, new_id())
        self.quarantine = quarantine
        self.arrival = arrival
        self.streams = streams
        self._fed = [0.0 for _ in streams]
        self.item: Item | None = None
        self.superseded: list[str] = []

    async def feed(self, data: bytes) -> None:
        """The pipeline's in-order bytes, to every stream check."""
        for index, stream in enumerate(self.streams):
            started = time.monotonic()
            await stream.feed(data)
            self._fed[index] += time.monotonic() - started

    async def _finish(self, index: int, stream: Stream) -> Verdict:
        started = time.monotonic()
        try:
            v = await stream.finish()
        except Exception as exc:
            v = Verdict(stream.check, State.FAILED, f"{stream.check}: check failed", str(exc))
        spent = self._fed[index] + time.monotonic() - started
        return Verdict(v.check, v.state, v.reason, v.detail, v.duration or spent)

    async def commit(self) -> None:
        """Keep the bytes and run the whole-file checks *while* the stream
        checks give their verdicts (clamd scans only after the last byte: its
        scan is the longest step, and the fsync and a signature check need not
        wait for it), then the row from every verdict together."""
        if self.done:
            raise StorageError(Fault.FAILURE, "upload already finished")
        finishing = asyncio.gather(*(self._finish(i, s) for i, s in enumerate(self.streams)))
        try:
            await asyncio.to_thread(self._keep, self.quarantine.data(self.id))
        except OSError as exc:
            await self.abort()
            with contextlib.suppress(BaseException):
                await finishing
            raise StorageError(Fault.FAILURE, detail=f"quarantine: {exc.strerror}") from None
        except BaseException:
            finishing.cancel()
            raise
        self.done = True
        now = time.time()
        a = self.arrival
        item = Item(
            self.id, now, now, a.uploader, a.source, a.conduit, a.path, a.target_kind,
            a.target_name, self.size, self.sha256, ItemState.PENDING,
            needs_approval=a.needs_approval, transfer=a.transfer,
        )  # fmt: skip
        try:
            whole = await self.quarantine.whole_file(item)
            streamed = list(await finishing)
        except BaseException:
            finishing.cancel()  # the stream checks close their scanner connections
            raise
        state, reason, verdicts = self.quarantine.decide(item, [*streamed, *whole])
        item.state, item.reason = state, reason
        item.verdicts = [verdict_row(v) | {"stream": v in streamed} for v in verdicts]
        item.deadline = self.quarantine.deadline(state, now)
        self.quarantine.items.add(item)
        self.item = item
        if state is not ItemState.REJECTED:
            self.superseded = self.quarantine.supersede(item)
        else:
            failed = next(v for v in verdicts if v.state is State.FAILED)
            raise TransferRefused(
                Fault.FORBIDDEN,
                failed.reason,
                f"{failed.detail or failed.reason}; sha256 {self.sha256}; kept as {self.id}",
            )

    async def abort(self) -> None:
        if not self.done:
            for stream in self.streams:
                with contextlib.suppress(Exception):
                    await stream.abort()
        await super().abort()


class EvidenceReceiving(Part):
    """A signature or manifest upload: kept as evidence for its folder's files."""

    def __init__(self, quarantine: Quarantine, arrival: Arrival) -> None:
        super().__init__(quarantine.root / "evidence", new_id().replace("q-", "e-"))
        self.quarantine = quarantine
        self.arrival = arrival
        self.kind = ""

    async def commit(self) -> None:
        if self.done:
            raise StorageError(Fault.FAILURE, "upload already finished")
        folder, name = posixpath.split(self.arrival.path)
        final = self.quarantine.evidence_file(self.id, name)
        try:
            with open(self.part, "rb") as f:
                head = f.read(64)
            final.parent.mkdir(mode=0o700)
            await asyncio.to_thread(self._keep, final)
        except OSError as exc:
            await self.abort()
            raise StorageError(Fault.FAILURE, detail=f"quarantine: {exc.strerror}") from None
        self.done = True
        self.kind = classify(name, head)
        with self.quarantine.db.transaction() as tx:
            tx.execute(
                "INSERT INTO quarantine_evidence VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.id, time.time(), self.arrival.uploader, self.arrival.path, folder,
                    name, subject_of(name), self.kind, self.size, self.sha256,
                ),
            )  # fmt: skip


def evidence_rows(db: StateDB) -> list[Mapping[str, Any]]:
    return [dict(r) for r in db.query("SELECT * FROM quarantine_evidence ORDER BY created")]
