"""The append-only, hash-chained journal: files, appends, rotation, recovery.

Layout of the journal folder::

    journal-000001.jsonl        rotated: ends with an audit.checkpoint (reason "rotation")
    journal-000002.jsonl        the active file: the highest number
    journal-000002.jsonl.torn   bytes of a torn last line moved aside at recovery
    checkpoint.json             the latest checkpoint record (so truncation shows)
    cursors/, index.sqlite      SIEM cursors and the search index (derived data)

:class:`Journal` is synchronous and meant to be driven from one worker
thread at a time (the :class:`~conduit.audit.auditor.Auditor` does that); a
lock guards it anyway. Sequence numbers and the chain head only advance after
the bytes are written (and fsynced, if the policy says so): a failed write
rolls the file back to its last good size, so a gap is impossible.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conduit.audit import anchors, checkpoint, faults
from conduit.audit.compose import compose
from conduit.audit.events import (
    GENESIS,
    Record,
    Value,
    decode,
    digest,
    encode_sorted,
    utc_now,
)
from conduit.audit.recent import RecentRecords

FILE_RE = re.compile(r"^journal-(\d{6,})\.jsonl$")
CHECKPOINT_FILE = "checkpoint.json"
LOCK_FILE = "journal.lock"
log = logging.getLogger("conduit.audit")
TRANSFER_END = frozenset({"success", "failed", "denied"})
#: Outcomes that open a transfer or an effect: its end is still to come.
OPENING = frozenset({"started", "intent"})

#: One event to append: (type, outcome, fields, ts). ts None: stamp at write time.
Item = tuple[str, str, dict[str, Value], str | None]


def file_name(number: int) -> str:
    return f"journal-{number:06d}.jsonl"


def journal_files(directory: Path) -> list[Path]:
    """The journal files in chain order."""
    found = []
    for entry in os.scandir(directory):
        m = FILE_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), Path(entry.path)))
    return [p for _, p in sorted(found)]


def iter_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, line without newline) of a file, the last maybe torn."""
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            yield number, offset, raw
            offset += len(raw)


class JournalBusy(Exception):
    """Another process holds the journal: two writers would fork the hash chain."""


def open_key(record: Record) -> str | None:
    """What ties a record to its transfer or write-ahead effect: ``transfer`` or ``intent``."""
    key = record.get("transfer") or record.get("intent")
    return key if isinstance(key, str) else None


@dataclass
class Recovery:
    """What :meth:`Journal.open` found: torn bytes moved aside, transfers and
    intents left open (newest record of each), sessions without an end."""

    torn: Path | None = None
    torn_bytes: int = 0
    open_transfers: dict[str, Record] = field(default_factory=dict)
    open_sessions: dict[str, Record] = field(default_factory=dict)


class Journal:
    """Appends records to the active file; keeps seq, head hash and open transfers."""

    def __init__(
        self,
        directory: Path,
        node: str,
        key: Ed25519PrivateKey,
        rotate_size: int = 64 * 1024 * 1024,
        fsync: str = "always",
    ) -> None:
        self.directory = directory
        self.node = node
        self.key = key
        self.rotate_size = rotate_size
        self.fsync_policy = fsync
        self.seq = 0
        self.head = GENESIS
        self.since_checkpoint = 0
        self.dirty = False
        self.open_transfers: dict[str, Record] = {}
        self.last_record: Record | None = None
        self._number = 1
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._size = 0
        self._active = ""
        self._lock = threading.Lock()
        self._owner: int | None = None  # fd holding the folder's flock
        #: folders outside this one that get a copy of each checkpoint's state
        self.anchor_dirs: list[Path] = []
        self._recent = RecentRecords()  # what the sinks and the index read back

    @property
    def path(self) -> Path:
        return self.directory / file_name(self._number)

    # -- opening and recovery -------------------------------------------------

    def open(self) -> Recovery:
        """Open the folder, move a torn last line aside, find the head and open transfers."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._take_ownership()
            try:
                return self._recover()
            except BaseException:
                self._release()
                raise

    def _recover(self) -> Recovery:
        files = journal_files(self.directory)
        recovery = Recovery()
        if files:
            self._number = int(FILE_RE.match(files[-1].name).group(1))  # type: ignore[union-attr]
            recovery = self._cut_torn(files[-1])
            self._find_head(files)
            recovery.open_transfers, recovery.open_sessions = self._scan_open(files)
            self.open_transfers = dict(recovery.open_transfers)
        self._reopen()
        return recovery

    def _take_ownership(self) -> None:
        """Hold an exclusive lock on the folder for as long as the journal is open.

        Two gateways sharing a journal (a second ``serve`` on the same config, or
        two configs naming the same folder) would each extend the chain from the
        same head, and verify would then report the journal as tampered.
        The lock file names the holder's pid for the error message; the lock
        itself goes with the process, so a killed gateway leaves nothing stale.
        """
        if self._owner is not None:
            return
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
            os.close(fd)
            by = f"process {holder}" if holder.isdigit() else "another process"
            raise JournalBusy(f"audit journal {self.directory} is in use by {by}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._owner = fd

    def _cut_torn(self, path: Path) -> Recovery:
        """A crash can leave a last line without newline (or half-written): move it aside."""
        data = path.read_bytes()
        cut = len(data)
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
        while cut:
            start = data.rfind(b"\n", 0, cut - 1) + 1
            try:
                decode(data[start : cut - 1])
                break
            except ValueError:
                cut = start
        if cut == len(data):
            return Recovery()
        torn = path.with_name(path.name + ".torn")
        with torn.open("ab") as f:
            f.write(data[cut:])
            f.flush()
            os.fsync(f.fileno())
        with path.open("r+b") as f:
            f.truncate(cut)
            os.fsync(f.fileno())
        return Recovery(torn=torn, torn_bytes=len(data) - cut)

    def _find_head(self, files: list[Path]) -> None:
        for path in reversed(files):
            last = None
            for _, _, raw in iter_lines(path):
                last = raw
            if last is not None:
                line = last.rstrip(b"\n")
                record = decode(line)
                self.seq = record["seq"]
                self.head = digest(line)
                break

    def _scan_open(self, files: list[Path]) -> tuple[dict[str, Record], dict[str, Record]]:
        """Transfers and intents with no end, and sessions with no ``session.end``,
        since the last clean close (newest files first)."""
        ended: set[str] = set()
        open_: dict[str, Record] = {}
        sessions: dict[str, Record] = {}
        closed: set[str] = set()
        for path in reversed(files):
            records = [decode(raw.rstrip(b"\n")) for _, _, raw in iter_lines(path)]
            for record in reversed(records):
                type_ = record["type"]
                if type_ == "audit.checkpoint" and record.get("reason") == "close":
                    return open_, sessions
                if type_ in ("session.start", "session.end"):
                    sid = record.get("session")
                    if type_ == "session.end":
                        closed.add(str(sid))
                    elif str(sid) not in closed:
                        sessions.setdefault(str(sid), record)
                    continue
                tid = open_key(record)
                if tid is None:
                    continue
                if record["outcome"] in TRANSFER_END or type_ == "audit.alert":
                    ended.add(tid)
                elif record["outcome"] in OPENING and tid not in ended:
                    open_.setdefault(tid, record)
        return open_, sessions

    # -- writing ----------------------------------------------------------------

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        st = os.fstat(fd)
        self._fd, self._ino, self._size = fd, (st.st_dev, st.st_ino), st.st_size
        self._active = str(self.path)  # checked before every write: no Path per write
        if new:
            _fsync_dir(self.directory)

    def _ensure_writable(self) -> tuple[int, int]:
        """The fd of the active file and the file's size, after checking its name
        still leads to it.

        Writing to a file that was moved or deleted would succeed and lose the
        trail; so a renamed, removed or replaced folder counts as unwritable.
        (The name's stat is the file's: its size needs no fstat of its own.)
        """
        try:
            st = os.stat(self._active)
            if self._fd is None or (st.st_dev, st.st_ino) != self._ino:
                raise FileNotFoundError
        except (FileNotFoundError, NotADirectoryError):
            if not self.directory.is_dir():
                raise NotADirectoryError(f"journal folder {self.directory} is missing") from None
            self._reopen()
            assert self._fd is not None
            return self._fd, self._size  # _reopen read it from the file
        return self._fd, st.st_size

    def _write(self, buf: bytes, durable: bool) -> None:
        fd, size = self._ensure_writable()
        try:
            if size != self._size:
                os.ftruncate(fd, self._size)
            done = faults.fs.write(fd, buf)  # nearly always all of it: no view to slice
            if done < len(buf):
                view = memoryview(buf)[done:]
                while view:
                    view = view[faults.fs.write(fd, view) :]
            if durable:
                faults.fs.fdatasync(fd)  # covers the new size too, which is all an append changes
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(buf)
        self.dirty = not durable

    def append(
        self, items: list[Item], rotate: bool = True, durable: bool | None = None
    ) -> list[int]:
        """Write ``items`` as consecutive records; their seqs. OSError: nothing written.

        With ``rotate`` false the caller calls :meth:`rotate_if_needed` itself
        (it fsyncs, so the auditor runs it in a worker thread). ``durable``
        overrides the fsync policy for this write (None: follow the policy).
        """
        if durable is None:
            durable = self.fsync_policy == "always"
        with self._lock:
            seqs = self._append_locked(items, durable=durable)
        if rotate:
            self.rotate_if_needed()
        return seqs

    @property
    def needs_rotation(self) -> bool:
        return self._size >= self.rotate_size

    def rotate_if_needed(self) -> None:
        """Seal the active file and start the next once it reached ``rotate_size``.

        A failure here does not undo the records already written; rotation is
        simply tried again after the next append.
        """
        with self._lock:
            if self._size >= self.rotate_size:
                try:
                    self._rotate()
                except OSError as exc:
                    log.warning("audit journal rotation failed (will retry): %s", exc)

    def _append_locked(self, items: list[Item], durable: bool) -> list[int]:
        # One record per call is the rule (a sequential client's every record):
        # this path is written for it, a batch costs no more per record.
        seq, head, node = self.seq, self.head, self.node
        lines: list[bytes] = []
        records: list[Record] = []
        for type_, outcome, fields, ts in items:
            seq += 1
            record = compose(seq, ts or utc_now(), node, type_, outcome, fields, head)
            line = encode_sorted(record)
            head = sha256(line).hexdigest()  # digest(), without its call
            lines.append(line)
            records.append(record)
        lines.append(b"")  # every line followed by its newline: one join, one buffer
        buf = b"\n".join(lines)  # (no line: b"", written all the same, as a probe)
        del lines[-1]
        self._write(buf, durable)
        # after _write: it may have reopened the file
        self._recent.keep(self._number, self._size - len(buf), lines, records)
        first = self.seq + 1
        self.seq, self.head = seq, head
        self.last_record = records[-1] if records else self.last_record
        self.since_checkpoint += len(items)
        opened = self.open_transfers
        for record in records:
            tid = record.get("transfer") or record.get("intent")  # open_key(), inline
            if tid is not None and isinstance(tid, str):
                if record["outcome"] in OPENING:
                    opened[tid] = record
                elif record["outcome"] in TRANSFER_END or record["type"] == "audit.alert":
                    opened.pop(tid, None)
        return list(range(first, seq + 1))

    def recall(self, number: int, offset: int, line: bytes) -> Record | None:
        """The record this journal wrote as ``line`` at ``offset`` of file ``number``,
        if it still has it and those are the bytes: what ``decode(line)`` gives,
        without parsing. The caller must not change it. Safe from any thread."""
        return self._recent.recall(number, offset, line)

    def sync(self) -> None:
        """fsync the active file if something was written without it."""
        with self._lock:
            if self.dirty and self._fd is not None:
                faults.fs.fsync(self._fd)
                self.dirty = False

    def checkpoint(self, reason: str) -> int:
        """Append a signed checkpoint sealing everything so far; durable whatever the policy."""
        with self._lock:
            return self._checkpoint_locked(reason)

    def _checkpoint_locked(self, reason: str) -> int:
        seq, ts = self.seq + 1, utc_now()
        fields = checkpoint.seal(self.key, self.node, seq, ts, self.head, reason)
        if self.dirty and self._fd is not None:
            faults.fs.fsync(self._fd)
        self._append_locked([("audit.checkpoint", "success", fields, ts)], durable=True)
        self.since_checkpoint = 0
        state = {
            "file": self.path.name,
            "seq": self.seq,
            "hash": self.head,
            "record": self.last_record,
        }
        data = json.dumps(state, indent=1).encode()
        _atomic_write(self.directory / CHECKPOINT_FILE, data)
        anchors.write(self.anchor_dirs, data)
        return self.seq

    def _rotate(self) -> None:
        self._checkpoint_locked("rotation")
        self._number += 1
        self._reopen()

    def close(self, reason: str = "close") -> None:
        """Seal with a checkpoint and close the file."""
        with self._lock:
            if self._fd is None:
                return
            try:
                self._checkpoint_locked(reason)
            finally:
                os.close(self._fd)
                self._fd = None
                self._release()

    def _release(self) -> None:
        if self._owner is not None:
            os.close(self._owner)  # closing the fd releases the flock
            self._owner = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
