from conduit.audit.index import Index, Query, parse_time
from conduit.audit.journal import journal_files


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
