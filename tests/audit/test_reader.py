"""JournalReader: resuming after any seq, across rotated files, without reading them whole."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conduit.audit import reader as reader_module
from conduit.audit.checkpoint import load_or_create_key
from conduit.audit.journal import Journal, journal_files
from conduit.audit.reader import JournalReader

COUNT = 4000


@pytest.fixture(scope="module")
def journal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,000 records of uneven length, rotated into files of ~300 KiB."""
    base = tmp_path_factory.mktemp("reader")
    journal = Journal(base / "audit", "gw-1", load_or_create_key(base), 300 * 1024, "never")
    journal.open()
    rng = random.Random(7)
    for _ in range(COUNT // 100):
        items = [
            ("file.upload", "success", {"path": "/x/" + "y" * rng.randrange(1, 400)}, None)
            for _ in range(100)
        ]
        journal.append(items)
    journal.close()
    assert len(journal_files(base / "audit")) >= 4
    return base / "audit"


def all_seqs(directory: Path) -> int:
    return JournalReader(directory).read_after(0, 10**6)[-1]["seq"]


def test_resumes_after_every_kind_of_seq(journal_dir: Path) -> None:
    last = all_seqs(journal_dir)
    firsts = [
        int(path.read_bytes().split(b'"seq":', 1)[1].split(b",", 1)[0])
        for path in journal_files(journal_dir)
    ]
    rng = random.Random(1)
    afters = {0, 1, last - 1, last, last + 5, *firsts, *(f - 1 for f in firsts)}
    afters |= {rng.randrange(0, last) for _ in range(60)}
    for after in sorted(afters):
        got = [r["seq"] for r in JournalReader(journal_dir).read_after(after, 7)]
        want = list(range(after + 1, min(after + 7, last) + 1))
        assert got == want, after


def test_resuming_reads_a_few_lines_not_the_file(
    journal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = 0
    real = reader_module.decode

    def counting(line: bytes) -> dict:
        nonlocal decoded
        decoded += 1
        return real(line)

    monkeypatch.setattr(reader_module, "decode", counting)
    newest = journal_files(journal_dir)[-2]  # a full file: ~300 KiB, ~1,000 lines
    lines = newest.read_bytes().splitlines()
    middle = int(lines[len(lines) * 3 // 4].split(b'"seq":', 1)[1].split(b",", 1)[0])
    records = JournalReader(journal_dir).read_after(middle, 1)
    assert records[0]["seq"] == middle + 1
    # Probes plus one 64 KiB window (a few hundred short lines), not the ~750
    # lines before the resumption point.
    assert decoded < len(lines) // 2, decoded


def test_a_damaged_line_never_makes_it_skip_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "audit", "gw-1", load_or_create_key(tmp_path), 10**9, "never")
    journal.open()
    journal.append([("file.upload", "success", {"path": "/x" * 50}, None)] * 3000)
    journal.close()
    path = journal_files(tmp_path / "audit")[0]
    data = bytearray(path.read_bytes())
    # Garble a line near the middle, where the first probe lands.
    at = data.index(b"\n", len(data) // 2) + 5
    data[at : at + 10] = b"\xff" * 10
    path.write_bytes(bytes(data))
    bad = data.count(b"\n", 0, at) + 1  # the damaged line's seq
    # Before the damage the reader stops at it, as it always did (verify names it).
    got = JournalReader(tmp_path / "audit").read_after(bad - 3, 10)
    assert [r["seq"] for r in got] == [bad - 2, bad - 1]
    # Past it, a reader may find its place or wait at the damage, but never
    # hands out a record other than the next one.
    for after in range(bad - 2, bad + 300, 7):
        got = JournalReader(tmp_path / "audit").read_after(after, 1)
        assert [r["seq"] for r in got] in ([], [after + 1]), after
