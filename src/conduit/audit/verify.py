"""Check a journal: chain, sequence, checkpoints, signatures; name the first fault.

The verifier stops at the first fault, because every later finding would be a
consequence of it, and says which record and what kind of damage it is:

* ``altered``   -- a record's bytes changed (its hash no longer links, or it no
  longer parses, or a signed checkpoint seals a different head);
* ``deleted``   -- sequence numbers are missing and the chain link is broken;
* ``reordered`` -- a record sits at the wrong place (it appears later/earlier);
* ``truncated`` -- the end is missing: a rotated file without its closing
  checkpoint, or the journal ends before what ``checkpoint.json`` sealed;
* ``re-sealed`` -- a checkpoint is not signed by the gateway's key;
* ``missing``   -- the signed state is missing or unsigned: no
  ``checkpoint.json``, one without a signed checkpoint record, or a journal
  without any checkpoint.

``checkpoint.json`` lives beside the journal, so whoever can cut the journal
can also put back an earlier genuine checkpoint there. Anchors
(:mod:`conduit.audit.anchors`) are checkpoints held elsewhere: the journal
must reach each one and hold the same record at its seq.

A last line without newline in the active file is what a crash mid-write
leaves: it is a note, not a fault (the gateway moves it aside on restart).
Records after the last checkpoint are reported as unsealed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conduit.audit import checkpoint
from conduit.audit.anchors import Anchor
from conduit.audit.events import GENESIS, Record, decode, digest, encode
from conduit.audit.journal import CHECKPOINT_FILE, journal_files


@dataclass
class Break:
    """Where and how the chain first breaks (the first one ends the verification)."""

    kind: str
    where: str
    detail: str
    seq: int | None = None

    def __str__(self) -> str:
        at = f"record seq {self.seq} ({self.where})" if self.seq else self.where
        return f"{self.kind}: {at}: {self.detail}"


@dataclass
class Report:
    records: int = 0
    checkpoints: int = 0
    files: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    unsealed: int = 0
    broken: Break | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None


class _Stop(Exception):
    pass


def _records_after(files: list[Path], index: int, line_no: int) -> Iterator[tuple[str, Record]]:
    """Records after (file index, line) -- only read when looking for a misplaced seq."""
    for i in range(index, len(files)):
        with files[i].open("rb") as f:
            for n, raw in enumerate(f, 1):
                if i == index and n <= line_no:
                    continue
                try:
                    yield f"{files[i].name}:{n}", decode(raw.rstrip(b"\n"))
                except ValueError:
                    continue


def verify(
    directory: Path,
    public_key: Ed25519PublicKey | None = None,
    start: Path | None = None,
    anchors: list[Anchor] | None = None,
) -> Report:
    """Verify the journal in ``directory`` (from file ``start`` on, trusting its first
    link); it must reach every anchor and agree with it."""
    report = Report()
    anchors = anchors or []
    files = journal_files(directory)
    if start is not None:
        names = [p.name for p in files]
        if start.name not in names:
            report.broken = Break("missing", str(start), "not a journal file of this folder")
            return report
        files = files[names.index(start.name) :]
    if public_key is None:
        report.notes.append("no public key given: checkpoint signatures not checked")
    state = _load_state(directory)
    seen: dict[int, tuple[str, str]] = {a.seq: ("", "") for a in anchors}
    try:
        _walk(files, public_key, start is None, state, report, seen)
        _check_state(state, public_key, report)
        for anchor in anchors:
            _check_anchor(anchor, seen, public_key, report)
    except _Stop:
        pass
    return report


def _fail(report: Report, kind: str, where: str, detail: str, seq: int | None = None) -> NoReturn:
    report.broken = Break(kind, where, detail, seq)
    raise _Stop


def _walk(
    files: list[Path],
    key: Ed25519PublicKey | None,
    from_genesis: bool,
    state: Record | None,
    report: Report,
    seen: dict[int, tuple[str, str]],
) -> None:
    expected: int | None = 1 if from_genesis else None
    prev: str | None = GENESIS if from_genesis else None
    last_where, last_cp, last_record = "", 0, None
    report.files = len(files)
    for fi, path in enumerate(files):
        active = fi == len(files) - 1
        lines = path.read_bytes().split(b"\n")
        torn = lines.pop()  # after the last newline: b"" unless torn
        if torn:
            lines.append(torn)
        for n, line in enumerate(lines, 1):
            where = f"{path.name}:{n}"
            is_last = n == len(lines)
            try:
                if torn and is_last:
                    raise ValueError("no newline at end")
                record = decode(line)
            except ValueError as exc:
                if active and is_last:
                    report.notes.append(
                        f"{where}: torn last line ({len(line)} bytes, {exc}): a crash during "
                        "a write; the gateway moves it aside when it starts"
                    )
                    break
                _fail(report, "altered", where, f"not a valid record ({exc})")
            if encode(record) != line:
                _fail(report, "altered", where, "not in canonical form (edited)", record["seq"])
            seq = record["seq"]
            linked = prev is None or record["prev"] == prev
            if expected is not None and seq != expected:
                if linked:
                    _fail(
                        report,
                        "altered",
                        where,
                        f"carries seq {seq} where seq {expected} "
                        "belongs (the chain link is intact)",
                        seq,
                    )
                if seq < expected:
                    _fail(
                        report,
                        "reordered",
                        where,
                        f"seq {seq} appears after seq {expected - 1}",
                        seq,
                    )
                for later, other in _records_after(files, fi, n):
                    if other["seq"] == expected:
                        _fail(
                            report,
                            "reordered",
                            where,
                            f"seq {seq} stands where seq "
                            f"{expected} belongs; seq {expected} is at {later}",
                            seq,
                        )
                gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                _fail(report, "deleted", where, f"record(s) seq {gap} missing before it", seq)
            if not linked:
                if last_record is None:
                    _fail(
                        report,
                        "altered",
                        where,
                        "the first record does not start the chain (prev is not the genesis hash)",
                        seq,
                    )
                _fail(
                    report,
                    "altered",
                    last_where,
                    f"its SHA-256 no longer matches the prev link of the next record (seq {seq})",
                    last_record["seq"],
                )
            if record["type"] == "audit.checkpoint":
                report.checkpoints += 1
                _check_checkpoint(record, key, where, last_cp, report)
                last_cp = seq
            if report.first_seq is None:
                report.first_seq = seq
            if state is not None and seq == state.get("seq"):
                state["_seen"] = digest(line)
            if seq in seen:
                seen[seq] = (digest(line), record["prev"])
            prev, expected = digest(line), seq + 1
            last_where, last_record = where, record
            report.records += 1
            report.last_seq = seq
        if not active and (
            last_record is None
            or last_record["type"] != "audit.checkpoint"
            or last_record.get("reason") != "rotation"
        ):
            _fail(
                report,
                "truncated",
                last_where or path.name,
                f"{path.name} does not end with "
                "its rotation checkpoint: records were cut off its end",
                last_record["seq"] if last_record else None,
            )
    report.unsealed = report.last_seq - last_cp if last_cp else report.records
    if report.unsealed:
        report.notes.append(
            f"{report.unsealed} record(s) after the last checkpoint are not "
            "sealed yet (normal while the gateway runs)"
        )


def _check_checkpoint(
    record: Record, key: Ed25519PublicKey | None, where: str, last_cp: int, report: Report
) -> None:
    seq = record["seq"]
    if record.get("head_hash") != record["prev"] or record.get("head_seq") != seq - 1:
        _fail(
            report,
            "altered",
            where,
            f"the signed checkpoint seals a different head: records "
            f"after seq {last_cp} up to seq {seq - 1} were rewritten and re-chained",
            seq,
        )
    if key is not None:
        problem = checkpoint.check(key, record)
        if problem:
            _fail(report, "re-sealed", where, f"checkpoint {problem}", seq)


def _load_state(directory: Path) -> Record | None:
    try:
        state = json.loads((directory / CHECKPOINT_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"_bad": True}
    return state if isinstance(state, dict) else {"_bad": True}


def _check_state(state: Record | None, key: Ed25519PublicKey | None, report: Report) -> None:
    """The latest checkpoint is also kept outside the chain, so a cut-off end shows."""
    where = CHECKPOINT_FILE
    if report.records and not report.checkpoints:
        _fail(report, "missing", "journal", "no signed checkpoint anywhere in the journal")
    if state is None:
        if report.records:
            _fail(report, "missing", where, "the signed state is missing (deleted?)")
        return
    if state.get("_bad") or not isinstance(state.get("seq"), int):
        _fail(report, "altered", where, "not a valid checkpoint state file")
    record = state.get("record")
    if (
        not isinstance(record, dict)
        or record.get("type") != "audit.checkpoint"
        or record.get("seq") != state["seq"]
        or digest(encode(record)) != state.get("hash")
    ):
        _fail(report, "missing", where, "holds no signed checkpoint matching its seq and hash")
    if key is not None:
        problem = checkpoint.check(key, record)
        if problem:
            _fail(report, "re-sealed", where, f"latest checkpoint {problem}", state["seq"])
    if report.first_seq is not None and state["seq"] < report.first_seq:
        return  # verifying from a later file on
    if report.last_seq < state["seq"]:
        _fail(
            report,
            "truncated",
            where,
            f"the journal ends at seq {report.last_seq} but the "
            f"latest signed checkpoint sealed up to seq {state['seq']}",
            report.last_seq + 1,
        )
    if state.get("_seen") != state.get("hash"):
        _fail(
            report,
            "altered",
            where,
            f"record seq {state['seq']} differs from the one the latest signed checkpoint recorded",
            state["seq"],
        )


def _check_anchor(
    anchor: Anchor,
    seen: dict[int, tuple[str, str]],
    key: Ed25519PublicKey | None,
    report: Report,
) -> None:
    """The journal must reach ``anchor`` and hold the same record at its seq."""
    where = anchor.source
    if anchor.record is not None and key is not None:
        problem = checkpoint.check(key, anchor.record)
        if problem:
            _fail(report, "re-sealed", where, f"anchored checkpoint {problem}", anchor.seq)
    if report.first_seq is not None and anchor.seq < report.first_seq:
        report.notes.append(f"{where}: seq {anchor.seq} is before the files verified")
        return
    if report.last_seq < anchor.seq:
        _fail(
            report,
            "truncated",
            where,
            f"the journal ends at seq {report.last_seq} but {where} holds a signed "
            f"checkpoint at seq {anchor.seq}: record(s) seq {report.last_seq + 1}.."
            f"{anchor.seq} are missing from the end",
            report.last_seq + 1,
        )
    line_hash, prev = seen[anchor.seq]
    if (anchor.hash is not None and line_hash != anchor.hash) or (
        anchor.head_hash is not None and prev != anchor.head_hash
    ):
        _fail(
            report,
            "altered",
            where,
            f"record seq {anchor.seq} is not the checkpoint {where} holds",
            anchor.seq,
        )
    report.notes.append(f"reaches {where} (checkpoint seq {anchor.seq})")
