"""The facade the gateway uses: ``Auditor.open``, ``record``, ``available``, ``close``.

One committer task owns the journal. ``record()`` queues its event and waits;
the committer takes everything queued, assigns sequence numbers, writes and
(with fsync "always") fsyncs once for the whole batch -- group commit -- and
wakes every waiter. When the committer is idle and nothing is queued (one
client moving files one by one), ``record()`` writes its event itself instead:
two trips through the event loop per event were a large part of what auditing
cost a tree of small files. Events arriving in the same loop iteration after
such a write are queued and batched as before.

Durable writes run on the event loop while the disk's flushes are fast and
otherwise in the journal's own flusher thread (:mod:`conduit.audit.flusher`;
which of the two: :mod:`conduit.audit.flushplace`), so a slow disk stalls the
sessions only for a rare probe. A durable record goes to that thread straight
from ``record()`` while the committer is idle; records queued at the thread meanwhile share its next
fsync. The committer also rotates, writes interval checkpoints, fsyncs in
"batch" mode and, while the journal cannot be written, probes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from conduit.audit import checkpoint
from conduit.audit.events import EventType, check_event, utc_now
from conduit.audit.flusher import Flusher, FlusherDied, Job, Untried
from conduit.audit.flushplace import FlushPlace
from conduit.audit.indexer import Indexer
from conduit.audit.journal import Item, Journal
from conduit.audit.outage import Outage
from conduit.audit.recovery import Settle, crash_items, settled_items
from conduit.audit.sinks import Sink, start_sinks
from conduit.errors import AuditUnavailable

if TYPE_CHECKING:
    from conduit.config.model import AuditConfig

log = logging.getLogger("conduit.audit")

BATCH_SYNC_INTERVAL = 1.0
PROBE_INTERVAL = 0.5


class _Pending:
    __slots__ = ("durable", "future", "hold", "item")

    def __init__(
        self,
        item: Item,
        future: asyncio.Future[int] | None,
        durable: bool = True,
        hold: bool = False,
    ) -> None:
        self.item = item
        self.future = future
        self.durable = durable
        self.hold = hold


class Auditor:
    """Writes events to the journal and feeds the SIEM sinks from it."""

    def __init__(self, config: AuditConfig, journal: Journal) -> None:
        self.config = config
        self.journal = journal
        self.sinks: list[Sink] = []
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._outage = Outage()  # why the journal cannot be written, what was held
        self._task: asyncio.Task[None] | None = None
        self._indexer: Indexer | None = None
        self._place = FlushPlace(journal)  # durable appends: on the loop or in the thread
        self._parked = False  # the committer waits for work (see _write_now)
        # the task that wrote a record in place in this loop iteration: more
        # records from it may follow in place, other tasks' join the queue
        self._hot: asyncio.Task[object] | None = None
        self._settle: Settle | None = None
        # the loop it runs on, once: the record path asked for it once per record,
        # and asyncio.get_running_loop() makes a getpid() system call (CPython 3.11)
        self._loop = asyncio.get_running_loop()
        self._flusher = Flusher(
            self._loop,
            self._place.append_in_thread,
            self._flush_failed,
            self._flushed,
        )

    @classmethod
    async def open(cls, config: AuditConfig, node: str, key_dir: Path) -> Auditor:
        """Load or create the signing key, open and recover the journal, start the sinks."""
        key = await asyncio.to_thread(checkpoint.load_or_create_key, Path(key_dir))
        journal = Journal(Path(config.journal), node, key, int(config.rotate_size), config.fsync)
        journal.anchor_dirs = [Path(d) for d in config.anchor_dirs]
        recovery = await asyncio.to_thread(journal.open)
        opened_at = journal.seq
        self = cls(config, journal)
        self._task = asyncio.create_task(self._commit_loop(), name="audit-commit")
        if recovery.torn is not None:
            await self.record(
                EventType.AUDIT_ALERT,
                "failed",
                reason=f"torn last record ({recovery.torn_bytes} bytes, a crash during a "
                f"write) moved aside to {recovery.torn.name}",
            )
        ended = crash_items(recovery.open_transfers, recovery.open_sessions)
        if ended:
            await asyncio.to_thread(journal.append, ended)
        # a signed end from the first moment: a short run that crashes still has one
        await asyncio.to_thread(journal.checkpoint, "start")
        self.sinks = start_sinks(config, journal, self._sink_alert, opened_at)
        self._indexer = Indexer(journal)
        return self

    async def settle_intents(self, settle: Settle) -> int:
        """Settle the intents a crash left without outcome (the gateway calls this
        at start with its storage); ``settle`` is kept for those open at close."""
        self._settle = settle
        items = await self._settled_items()
        if items:
            await asyncio.to_thread(self.journal.append, items)
        return len(items)

    async def _settled_items(self) -> list[Item]:
        return await settled_items(self.journal.open_transfers, self._settle)

    @property
    def available(self) -> bool:
        """False while on_failure is "closed" and the journal cannot be written."""
        return self._outage.reason is None or self.config.on_failure != "closed"

    @property
    def unavailable_reason(self) -> str | None:
        return self._outage.reason

    async def _sink_alert(self, outcome: str, reason: str) -> None:
        """A SIEM sink's ``audit.alert`` (down, back, spool filling)."""
        await self.record(EventType.AUDIT_ALERT, outcome, reason=reason)

    async def record(
        self,
        type: str,
        outcome: str,
        *,
        durable: bool = True,
        hold: bool = False,
        **fields: object,
    ) -> int:
        """Append one event; return its seq once it is written per the fsync policy.

        ``durable=False`` (for ``started`` records, which only matter if the
        gateway process dies, not the machine) returns once the record is in
        the journal file without waiting for an fsync; the next durable record
        or the periodic sync makes it durable. The chain is the same either way.

        ``hold=True`` is for the outcome of an effect whose durable ``intent``
        record is already written: the effect happened (or not) whatever the
        journal does now, so the outcome is never refused, even in closed
        mode; while the journal cannot be written it waits in memory like an
        alert-mode event, and start-up recovery settles it if the process dies.

        Closed mode and the journal cannot be written: AuditUnavailable. Alert
        mode: never raises; the event is held in memory and written (after an
        audit.alert) when the journal works again, and 0 is returned.
        """
        return await self.record_fields(type, outcome, fields, durable=durable, hold=hold)

    async def record_fields(
        self,
        type: str,
        outcome: str,
        fields: dict[str, object],
        *,
        durable: bool = True,
        hold: bool = False,
        skip_none: bool = False,
    ) -> int:
        """:meth:`record` with the fields as a dict the caller gives up (one copy
        fewer per event); ``skip_none``: leave out the fields whose value is None."""
        # an EventType is a str; the journal keeps plain text (and plain text
        # hashes in C where a str subclass's set lookups cost more)
        type, outcome = str(type), str(outcome)
        cleaned = check_event(type, outcome, fields, skip_none=skip_none)
        if self._closing:
            raise AuditUnavailable("the audit journal is closed")
        item: Item = (type, outcome, cleaned, utc_now())
        if (
            self._parked
            and not self._queue
            and self._outage.reason is None
            and not self.journal.needs_rotation
        ):
            task = asyncio.current_task(self._loop)
            here = (self._hot is None or self._hot is task) and not self._flusher.busy
            if durable and self._place.in_thread and not (here and self._place.probe_due()):
                return await self._flush_now(item, hold)
            if here:
                return self._write_now(item, durable, hold, task)
        return await self._queued(item, durable, hold)

    async def _queued(self, item: Item, durable: bool, hold: bool) -> int:
        """Hand the record to the committer and wait for its batch."""
        future: asyncio.Future[int] = self._loop.create_future()
        self._queue.append(_Pending(item, future, durable, hold))
        self._wake.set()
        return await future

    @property
    def _checkpoint_due(self) -> bool:
        return self.journal.since_checkpoint >= self.config.checkpoint_records

    def _write_now(
        self, item: Item, durable: bool, hold: bool, task: asyncio.Task[object] | None
    ) -> int:
        """Commit one record in the caller, without a trip through the committer.

        Only while the committer is parked and nothing is queued, so order is
        kept. Records from other tasks arriving later in the same loop
        iteration are queued and share the committer's next batch (group
        commit under concurrency); the same task's next record (a session's
        "started" right after its previous "success") may follow in place.
        """
        try:
            if durable and self.journal.fsync_policy == "always":
                (seq,) = self._place.append_here([item])
            else:
                (seq,) = self.journal.append([item], rotate=False, durable=False)
        except Exception as exc:
            self._write_failed(exc)
            return self._refuse_or_hold(item, hold)
        if self._hot is None:
            self._loop.call_soon(self._cool)
        self._hot = task
        if self.journal.needs_rotation or self._checkpoint_due:
            self._wake.set()  # the committer rotates or seals (fsync: off the loop)
        for sink in self.sinks:
            sink.notify()
        return seq

    def _cool(self) -> None:
        self._hot = None

    async def _flush_now(self, item: Item, hold: bool) -> int:
        """A durable record straight to the flusher thread, past the committer."""
        try:
            # a failed write: _flush_failed answers (AuditUnavailable, or 0 if held)
            (seq,) = await self._flusher.submit([item], hold=hold)
        except Untried:  # queued behind a failed write: the committer knows it now
            if self._closing:
                return self._refuse_or_hold(item, hold)
            return await self._queued(item, True, hold)
        return seq

    def _flush_failed(self, exc: Exception, jobs: list[Job]) -> None:
        """The flusher's write failed: down, and its direct records refused or held
        now, before the committer can write its "writable again" alert."""
        if isinstance(exc, FlusherDied):
            self._went_down(exc)  # logged by the thread
        else:
            self._write_failed(exc)
        for job in jobs:
            if job.hold is None or job.future.done():
                continue
            try:
                job.future.set_result([self._refuse_or_hold(job.items[0], job.hold)])
            except AuditUnavailable as refused:
                job.future.set_exception(refused)

    def _flushed(self) -> None:
        if self.journal.needs_rotation or self._checkpoint_due:
            self._wake.set()
        for sink in self.sinks:
            sink.notify()

    def _refuse_or_hold(self, item: Item, hold: bool = False) -> int:
        """An event the journal could not take: AuditUnavailable (closed) or held (alert,
        and the outcomes of effects already announced by a durable intent)."""
        if self.config.on_failure == "closed" and not hold:
            self._outage.refused += 1
            raise AuditUnavailable(self._outage.reason or "the audit journal cannot be written")
        self._outage.hold(item)
        return 0

    # -- the committer --------------------------------------------------------

    async def _commit_loop(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        next_checkpoint = time.monotonic() + cfg.checkpoint_interval
        next_sync = time.monotonic() + BATCH_SYNC_INTERVAL
        while True:
            now = time.monotonic()
            if self._outage.reason is not None:
                # down: the only thing to do is look again, every PROBE_INTERVAL
                # (a sync or checkpoint time that passed meanwhile is not a
                # reason to look sooner: it made this loop spin a core)
                due = now + PROBE_INTERVAL
            else:
                # next_sync always counts: records written in the callers while
                # the committer is parked can leave the journal dirty
                due = min(next_checkpoint, next_sync)
            if not self._queue and not self._closing:
                # a timer, not wait_for: this loop runs once per commit and must be cheap
                timer = loop.call_later(max(0.0, due - now), self._wake.set)
                self._parked = True
                await self._wake.wait()
                self._parked = False
                timer.cancel()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if batch or self._outage.reason is not None:
                await self._commit(batch)
            now = time.monotonic()
            if self._outage.reason is None:
                try:
                    if now >= next_checkpoint or self._checkpoint_due:
                        reason = "records" if self._checkpoint_due else "interval"
                        next_checkpoint = now + cfg.checkpoint_interval
                        if self.journal.since_checkpoint:
                            await asyncio.to_thread(self.journal.checkpoint, reason)
                    if now >= next_sync:
                        next_sync = now + BATCH_SYNC_INTERVAL
                        if self.journal.dirty:
                            await asyncio.to_thread(self.journal.sync)
                    if self.journal.needs_rotation:
                        await asyncio.to_thread(self.journal.rotate_if_needed)
                except OSError as exc:
                    self._went_down(exc)
            if self._closing and not self._queue:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        items = [p.item for p in batch]
        recovering = self._outage.reason is not None
        first: list[Item] = self._outage.back(self.config.on_failure) if recovering else []
        items = [*first, *items]
        always = self.journal.fsync_policy == "always"
        durable = always and (recovering or any(p.durable for p in batch))
        try:
            if always and (self._flusher.busy or (durable and self._place.in_thread)):
                # the thread may hold the journal: never wait for it on the loop
                try:
                    seqs = await self._flusher.submit(items, durable)
                except Untried:  # behind a failed write: again, as a recovery
                    self._queue[:0] = batch
                    return
            elif durable:
                seqs = self._place.append_here(items)
            elif always:
                # only non-durable records: to the page cache now, fsync later
                seqs = self.journal.append(items, rotate=False, durable=False)
            else:
                # no fsync on this path: a write to the page cache is cheaper
                # than a trip to a worker thread
                seqs = self.journal.append(items, rotate=False)
            if self.journal.needs_rotation:
                await asyncio.to_thread(self.journal.rotate_if_needed)
        except Exception as exc:
            self._write_failed(exc)
            for p in batch:
                if p.future is None or p.future.done():
                    continue
                try:
                    p.future.set_result(self._refuse_or_hold(p.item, p.hold))
                except AuditUnavailable as refused:
                    p.future.set_exception(refused)
            return
        if recovering:
            self._outage.ended()
            seqs = seqs[len(first) :]
        for p, seq in zip(batch, seqs, strict=True):
            if p.future is not None and not p.future.done():
                p.future.set_result(seq)
        for sink in self.sinks:
            sink.notify()

    def _write_failed(self, exc: Exception) -> None:
        """An append raised: log what is not a plain I/O error, then go down."""
        if not isinstance(exc, OSError):
            log.error("audit journal write failed", exc_info=exc)
        self._went_down(exc)

    def _went_down(self, exc: Exception) -> None:
        newly = self._outage.reason is None
        self._outage.went_down(exc, self.journal.directory)
        if newly:
            # the committer probes the journal from now on, on its own timer: a
            # failed probe waking it again would be a loop that burns a core
            self._wake.set()

    async def close(self, timeout: float = 5.0) -> None:
        """Flush, seal with a checkpoint, stop the sinks (waiting at most ``timeout``)."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._indexer is not None:
            self._indexer.halt()
        if self._task is not None:
            await self._task
        try:
            if self._outage.held:  # alert mode: events the journal could not take yet
                await self._commit([])
        except OSError as exc:
            log.error("audit journal close failed: %s", exc)
        await self._flusher.stop()  # after the records it still had
        ended = crash_items(self.journal.open_transfers, {})
        try:
            ended += await self._settled_items()
            if ended:
                await asyncio.to_thread(self.journal.append, ended)
            await asyncio.to_thread(self.journal.close)
        except OSError as exc:
            log.error("audit journal close failed: %s", exc)
        for sink in self.sinks:
            sink.notify()
        if self.sinks:
            await asyncio.wait([asyncio.create_task(s.stop(timeout)) for s in self.sinks])
        if self._indexer is not None:
            await self._indexer.stop()
        self._task = None
