import asyncio
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from conduit.audit import indexer as indexer_module
from conduit.audit.checkpoint import load_or_create_key
from conduit.audit.index import Index, Query, _row, _storable, parse_time
from conduit.audit.journal import Journal, journal_files


async def test_index_is_incremental_and_rebuilds(make_auditor, tmp_path):
    auditor = await make_auditor(rotate_size=3000)
    for i in range(30):
        await auditor.record("file.upload", "success", principal=f"u{i % 3}", path=f"/a/{i}")
    index = Index(tmp_path / "audit")
    first = index.refresh()
    assert first == auditor.journal.seq
    for i in range(5):
        await auditor.record("file.delete", "success", principal="u9", path=f"/a/{i}")
    # only what is new (5 records, and the rotation checkpoint if it came after)
    assert index.refresh() == auditor.journal.seq - first >= 5
    assert [r["path"] for r in index.search(Query(user="u9"))] == [f"/a/{i}" for i in range(5)]
    assert len(list(index.search(Query(user="u1", type="file.*")))) == 10
    newest = list(index.search(Query(limit=1, newest_first=True)))
    assert newest[0]["seq"] == auditor.journal.seq
    await auditor.close()
    index.close()
    # archive the oldest file: the index rebuilds from what is left
    journal_files(tmp_path / "audit")[0].unlink()
    (tmp_path / "audit" / "index.sqlite").unlink()
    index = Index(tmp_path / "audit")
    assert index.refresh() > 0
    assert len(list(index.search(Query(user="u9")))) == 5
    index.close()


def test_parse_time():
    assert parse_time("2026-11-24") == "2026-11-24T00:00:00.000000Z"
    assert parse_time("2026-11-24T12:00:00+01:00") == "2026-11-24T11:00:00.000000Z"
    assert parse_time("2h") < parse_time("1h")


def indexed(directory) -> int:
    with sqlite3.connect(directory / "index.sqlite") as db:
        return db.execute("SELECT count(*) FROM events").fetchone()[0]


async def test_the_gateway_indexes_when_the_journal_goes_quiet(make_auditor, tmp_path, monkeypatch):
    monkeypatch.setattr(indexer_module, "INDEX_POLL", 0.3)
    monkeypatch.setattr(indexer_module, "INDEX_MAX_LAG", 60.0)
    auditor = await make_auditor()
    for i in range(50):  # a busy second: a record every 20 ms, never 0.3 s of quiet
        await auditor.record("file.upload", "success", path=f"/a/{i}")
        await asyncio.sleep(0.02)
    assert not (tmp_path / "audit" / "index.sqlite").exists()
    await asyncio.sleep(1.0)  # quiet: it catches up
    assert indexed(tmp_path / "audit") == auditor.journal.seq
    await auditor.close()


async def test_sustained_load_still_indexes_every_max_lag(make_auditor, tmp_path, monkeypatch):
    monkeypatch.setattr(indexer_module, "INDEX_POLL", 0.3)
    monkeypatch.setattr(indexer_module, "INDEX_MAX_LAG", 0.6)
    auditor = await make_auditor()
    for i in range(75):  # 1.5 s without a quiet poll
        await auditor.record("file.upload", "success", path=f"/a/{i}")
        await asyncio.sleep(0.02)
    assert indexed(tmp_path / "audit") > 0
    await auditor.close()


def test_refresh_in_slices_resumes_where_it_stopped(tmp_path):
    journal = Journal(tmp_path / "audit", "gw-1", load_or_create_key(tmp_path), 400_000, "never")
    journal.open()
    for block in range(12):  # 12,000 records over several rotated files
        journal.append(
            [("file.upload", "success", {"path": f"/a/{block}/{i}"}, None) for i in range(1000)]
        )
    journal.close()
    index = Index(tmp_path / "audit")
    slices = [index.refresh(5_000) for _ in range(5)]
    # A slice ends at the limit or at the end of a file past it, never far beyond.
    assert all(0 < n < 5_000 + 2_500 for n in slices[:2]) and slices[-1] == 0
    assert sum(slices) == journal.seq == indexed(tmp_path / "audit")
    found = list(index.search(Query(path="/a/11/999")))
    assert [r["path"] for r in found] == ["/a/11/999"] and found[0]["seq"] > 12_000
    index.close()


def test_a_name_that_is_not_utf8_does_not_stop_the_index(tmp_path):
    """The journal keeps undecodable bytes as lone surrogates (``\\udcff``) on
    purpose; SQLite refuses such text, and the index used to stop at that
    record for good: every later record went unindexed."""
    journal = Journal(tmp_path / "audit", "gw-1", load_or_create_key(tmp_path), 400_000, "never")
    journal.open()
    hostile = "/inbox/\udcff\ud800-\u202ename.bin"
    journal.append(
        [
            ("access.denied", "denied", {"path": hostile, "user_given": "\udc80root"}, None),
            ("file.upload", "success", {"path": "/inbox/after.bin", "principal": "alice"}, None),
        ]
    )
    journal.close()
    index = Index(tmp_path / "audit")
    assert index.refresh() == journal.seq == indexed(tmp_path / "audit")
    assert [r["path"] for r in index.search(Query(user="alice"))] == ["/inbox/after.bin"]
    # the record itself comes back from the journal as written, undecodable bytes and all
    [denied] = index.search(Query(type="access.denied"))
    assert denied["path"] == hostile
    index.close()


def test_searches_by_hash_and_given_name_use_their_partial_indexes(tmp_path):
    """The partial indexes must still serve the searches (or search would scan)."""
    import sqlite3

    from conduit.audit.index import _SCHEMA

    db = sqlite3.connect(":memory:")
    db.executescript(_SCHEMA)

    def plan(sql, *args):
        return " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))

    assert "events_sha256" in plan("SELECT seq FROM events WHERE sha256 = ?", "ab")
    assert "events_sha256" in plan("SELECT seq FROM events WHERE sha256 GLOB ?", "ab*")
    both = plan("SELECT seq FROM events WHERE (principal = ? OR user_given = ?)", "a", "a")
    assert "events_user_given" in both and "events_principal" in both


def test_rows_already_indexed_are_replaced_not_refused(tmp_path):
    """Refresh inserts with a plain INSERT (new seqs); an index that lost its
    resume row holds every seq it scans again: the batch must still go in,
    replacing, not fail on the duplicate keys and stop the index."""
    journal = Journal(tmp_path / "audit", "gw-1", load_or_create_key(tmp_path), 400_000, "never")
    journal.open()
    journal.append([("file.upload", "success", {"path": f"/a/{i}"}, None) for i in range(50)])
    index = Index(tmp_path / "audit")
    assert index.refresh() == journal.seq
    before = list(index.search(Query(type="file.upload")))
    with index.db:
        index.db.execute("DELETE FROM resume")
    journal.append([("file.delete", "success", {"path": "/a/new"}, None)])
    assert index.refresh() == journal.seq  # everything scanned again, duplicates and all
    assert indexed(tmp_path / "audit") == journal.seq
    assert list(index.search(Query(type="file.upload"))) == before
    assert [r["path"] for r in index.search(Query(type="file.delete"))] == ["/a/new"]
    index.close()
    journal.close()


def _row_before(record, number, offset, length):
    """The index's row as it was built before its ASCII shortcut (the reference)."""

    def s(key):
        value = record.get(key)
        return _storable(value) if isinstance(value, str) else None

    sha = (s("sha256") or "").lower() or None
    path = s("path") or s("new_path")
    head = (record["seq"], record["ts"], record["type"], record["outcome"])
    return (*head, s("principal"), s("user_given"), path, sha, number, offset, length)


_COLUMN_KEYS = ["principal", "user_given", "path", "new_path", "sha256", "zone"]


class _Text(str):
    pass


_COLUMN_VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.lists(st.text(), max_size=2),
    st.text(),
    st.text(alphabet=st.characters(codec="ascii")),
    st.sampled_from(["", "AB" * 32, "\udcff", "\ud800x", "/a/\u202e\x1b", "É"]),
    st.text().map(_Text),
)


@given(st.dictionaries(st.sampled_from(_COLUMN_KEYS), _COLUMN_VALUES))
def test_a_row_is_what_it_was_whatever_the_values(fields):
    record = {"seq": 3, "ts": "t", "type": "file.upload", "outcome": "success", **fields}
    assert _row(record, 2, 10, 99) == _row_before(record, 2, 10, 99)
    assert [type(v) for v in _row(record, 2, 10, 99)] == [
        type(v) for v in _row_before(record, 2, 10, 99)
    ]
