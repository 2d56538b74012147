"""A provable end: cutting the journal's tail shows, given an anchor held elsewhere.

Each case is what a local attacker with root can do to the journal folder:
cut the last lines, delete the last files, delete ``checkpoint.json`` or put
back an earlier genuine one. The signed state's absence is a fault by itself;
an earlier genuine state passes the folder alone (the documented limit) and
is caught by every kind of anchor: ``--anchor SEQ:HASH``, a real SIEM's log
(``--anchor-from``, RFC 5424 and CEF) and an anchor folder.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from conduit.audit import verify
from conduit.audit.anchors import from_dirs, from_siem_log, parse
from conduit.audit.checkpoint import load_public_key
from conduit.audit.journal import journal_files
from conduit.config.model import SiemSink
from tests.cli.test_audit import run

from .syslog_listener import Listener


def key(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_public_key(tmp_path / "audit_ed25519.pub")


async def write_journal(make_auditor, tmp_path: Path, fmt: str = "rfc5424", **kw):  # type: ignore[no-untyped-def]
    """A journal with several checkpoints, its anchor folder and a SIEM log file."""
    anchor_dir = tmp_path / "anchor"
    anchor_dir.mkdir()
    listener = await Listener("tcp").start()
    auditor = await make_auditor(
        anchor_dirs=[anchor_dir],
        checkpoint_records=5,
        rotate_size=3000,
        siem=[SiemSink(target=listener.target, format=fmt)],
        **kw,
    )
    for i in range(45):
        await auditor.record("file.upload", "success", principal="alice", path=f"/fw/{i}.bin")
        await asyncio.sleep(0.001)  # the client's round trip: the committer gets its turn
    await auditor.close()
    last = json.loads((tmp_path / "audit" / "checkpoint.json").read_text())["seq"]
    await listener.wait_for(last)
    await listener.stop()
    log = tmp_path / "siem.log"
    log.write_bytes(b"".join(m + b"\n" for m in listener.messages))
    return tmp_path / "audit", anchor_dir, log


def checkpoints(directory: Path) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for path in journal_files(directory):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["type"] == "audit.checkpoint":
                out.append(rec)
    return out


def cut_after(directory: Path, seq: int) -> None:
    """Remove every record after ``seq`` (lines and whole files)."""
    for path in journal_files(directory):
        kept = [ln for ln in path.read_text().splitlines(True) if json.loads(ln)["seq"] <= seq]
        if kept:
            path.write_text("".join(kept))
        else:
            path.unlink()


def restore_state(directory: Path, record: dict) -> None:  # type: ignore[type-arg]
    """Rebuild checkpoint.json from an earlier genuine checkpoint record."""
    from conduit.audit.events import digest, encode

    state = {"file": "x", "seq": record["seq"], "hash": digest(encode(record)), "record": record}
    (directory / "checkpoint.json").write_text(json.dumps(state))


async def test_intact_journal_reaches_every_anchor(make_auditor, tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal, anchor_dir, log = await write_journal(make_auditor, tmp_path)
    cps = checkpoints(journal)
    assert next(c["reason"] for c in cps) == "start" and cps[-1]["reason"] == "close"
    assert "records" in {c["reason"] for c in cps}  # every checkpoint_records records
    anchors = [from_siem_log(log), *from_dirs([anchor_dir])]
    assert all(a is not None and not isinstance(a, str) for a in anchors)
    report = verify(journal, key(tmp_path), anchors=anchors)  # type: ignore[arg-type]
    assert report.ok, report.broken
    assert anchors[0].seq == cps[-1]["seq"]  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["lines-and-state", "files-and-state"])
async def test_a_cut_tail_without_its_state_fails(make_auditor, tmp_path, how: str) -> None:  # type: ignore[no-untyped-def]
    journal, _anchor_dir, log = await write_journal(make_auditor, tmp_path)
    if how == "lines-and-state":
        path = journal_files(journal)[-1]
        path.write_text("".join(path.read_text().splitlines(True)[:-3]))
    else:
        for path in journal_files(journal)[-2:]:
            path.unlink()
    (journal / "checkpoint.json").unlink()
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "missing" and "signed state is missing" in fault.detail
    fault = verify(journal, key(tmp_path), anchors=[from_siem_log(log)]).broken  # type: ignore[list-item]
    assert fault is not None


@pytest.mark.parametrize("anchor", ["seq-hash", "siem-rfc5424", "siem-cef", "anchor-dir"])
async def test_an_earlier_genuine_state_is_caught_by_each_anchor(
    make_auditor, tmp_path, anchor: str
) -> None:  # type: ignore[no-untyped-def]
    fmt = "cef" if anchor == "siem-cef" else "rfc5424"
    journal, anchor_dir, log = await write_journal(make_auditor, tmp_path, fmt)
    state = json.loads((journal / "checkpoint.json").read_text())
    earlier = checkpoints(journal)[-3]
    cut_after(journal, earlier["seq"])
    restore_state(journal, earlier)
    # the folder alone cannot tell: every signature and link is genuine
    assert verify(journal, key(tmp_path)).ok
    if anchor == "seq-hash":
        given = parse(f"{state['seq']}:{state['hash']}")
    elif anchor == "anchor-dir":
        (found,) = from_dirs([anchor_dir])
        assert not isinstance(found, str)
        given = found
    else:
        found_log = from_siem_log(log)
        assert found_log is not None
        given = found_log
    assert given.seq == state["seq"]
    fault = verify(journal, key(tmp_path), anchors=[given]).broken
    assert fault and fault.kind == "truncated"
    assert f"ends at seq {earlier['seq']}" in fault.detail
    assert f"seq {earlier['seq'] + 1}..{state['seq']} are missing" in fault.detail


async def test_cli_verify_with_anchors(make_auditor, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    journal, anchor_dir, log = await write_journal(make_auditor, tmp_path)
    base = ["verify", "--journal", str(journal), "--key", str(tmp_path / "audit_ed25519.pub")]
    ok = [*base, "--anchor-from", str(log), "--anchor-dir", str(anchor_dir)]
    assert run(ok) == 0
    assert "reaches SIEM log" in capsys.readouterr().out
    earlier = checkpoints(journal)[-2]
    cut_after(journal, earlier["seq"])
    restore_state(journal, earlier)
    assert run(base) == 0
    capsys.readouterr()
    assert run(ok) == 1
    out = capsys.readouterr().out
    assert "FAULT truncated" in out and "are missing from the end" in out
    assert run([*base, "--anchor", "12:nothex"]) == 2


async def test_unsigned_state_and_no_checkpoint_fail(make_auditor, tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal, _, _ = await write_journal(make_auditor, tmp_path)
    state = json.loads((journal / "checkpoint.json").read_text())
    del state["record"]
    (journal / "checkpoint.json").write_text(json.dumps(state))
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "missing" and "no signed checkpoint" in fault.detail
    # a journal whose checkpoints were all removed (the chain re-linked by hand is
    # not needed: keep only the records before the first checkpoint... which is none)
    for path in journal_files(journal):
        path.unlink()
    (journal / "checkpoint.json").unlink()
    first = journal / "journal-000001.jsonl"
    from conduit.audit.events import GENESIS, build, encode, utc_now

    rec = build(1, utc_now(), "gw-1", "gateway.start", "success", {}, GENESIS)
    first.write_bytes(encode(rec) + b"\n")
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "missing" and "no signed checkpoint" in fault.detail
