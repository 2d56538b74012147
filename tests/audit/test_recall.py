"""The journal hands its readers (SIEM sinks, the search index) the records it has
just written instead of parsing their lines again; only for the very same bytes."""

from pathlib import Path

from conduit.audit.checkpoint import load_or_create_key
from conduit.audit.events import EventType, decode
from conduit.audit.index import Index, Query
from conduit.audit.journal import Journal, journal_files
from conduit.audit.reader import JournalReader
from conduit.audit.sinks import format_record


def open_journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "audit", "gw-1", load_or_create_key(tmp_path / "keys"))
    journal.open()
    return journal


def lines(directory: Path) -> list[bytes]:
    return [ln for p in journal_files(directory) for ln in p.read_bytes().splitlines()]


def test_readers_get_what_parsing_gives_and_hits_are_real(tmp_path):
    journal = open_journal(tmp_path)
    calls: list[bool] = []

    def recall(number, offset, line):
        hit = journal.recall(number, offset, line)
        calls.append(hit is not None)
        return hit

    odd = {"path": "/a/\udcff\u202e\n", "bytes": 4096, "duration": 1.5e-7, "factors": ["k"]}
    journal.append([("file.download", "success", odd, None)])
    journal.append([("file.download", "success", {"path": "/b", "bytes": 1}, None)] * 4)
    read = JournalReader(journal.directory, recall).read_lines_after(0)
    assert [r for r, _ in read] == [decode(ln) for ln in lines(journal.directory)]
    # the same key order too (a CEF line lists fields in it), and the same SIEM lines
    assert [list(r) for r, _ in read] == [list(decode(ln)) for ln in lines(journal.directory)]
    for record, line in read:
        for fmt in ("rfc5424", "cef"):
            assert format_record(record, fmt, line) == format_record(decode(line), fmt, line)
    assert [ln for _, ln in read] == lines(journal.directory)
    assert read[0][0]["path"] == odd["path"]
    assert len(calls) == 5 and all(calls)  # every one came from memory, and equals the parse
    journal.close()


def test_the_index_takes_recalled_records(tmp_path):
    journal = open_journal(tmp_path)
    journal.append([("file.download", "success", {"path": f"/b/{i}"}, None) for i in range(5)])
    index = Index(journal.directory, journal.recall)
    assert index.refresh() == 5
    assert [r["path"] for r in index.search(Query(path="/b/*"))] == [f"/b/{i}" for i in range(5)]
    index.close()
    journal.close()


def test_bytes_changed_on_disk_are_parsed_not_recalled(tmp_path):
    journal = open_journal(tmp_path)
    journal.append([("file.upload", "success", {"path": "/x/aaaa"}, None)])
    path = journal.path
    data = path.read_bytes()
    path.write_bytes(data.replace(b"/x/aaaa", b"/x/bbbb"))  # same length, same offsets
    records = JournalReader(journal.directory, journal.recall).read_after(0)
    assert records[-1]["path"] == "/x/bbbb"  # what is on disk, not what was written
    index = Index(journal.directory, journal.recall)
    index.refresh()
    assert [r["path"] for r in index.search(Query(path="/x/bbbb"))] == ["/x/bbbb"]
    index.close()


def test_records_that_parse_to_other_types_are_not_kept(tmp_path):
    journal = open_journal(tmp_path)
    # an EventType is a str subclass and a tuple parses back as a list
    journal.append([(EventType.AUDIT_ALERT, "success", {"reason": "r"}, None)])
    journal.append([("file.upload", "success", {"factors": ("a", "b")}, None)])  # type: ignore[list-item]
    read = JournalReader(journal.directory, journal.recall).read_after(0)
    assert type(read[-2]["type"]) is str and read[-1]["factors"] == ["a", "b"]
    journal.close()


def test_only_the_last_records_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr("conduit.audit.recent.RECENT_MAX", 3)
    journal = open_journal(tmp_path)
    for i in range(5):
        journal.append([("file.upload", "success", {"path": f"/k/{i}"}, None)])
    offsets, at = [], 0
    for line in lines(journal.directory):
        offsets.append(at)
        at += len(line) + 1
    written = zip(offsets, lines(journal.directory), strict=True)
    got = [journal.recall(1, offset, line) for offset, line in written]
    assert [r is not None for r in got] == [False, False, True, True, True]
    assert [r["path"] for r in JournalReader(journal.directory, journal.recall).read_after(0)] == [
        f"/k/{i}" for i in range(5)
    ]
    journal.close()
