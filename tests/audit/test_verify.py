"""Tamper tests: every kind of damage makes verify fail and name the record."""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conduit.audit import checkpoint, verify
from conduit.audit.checkpoint import load_public_key
from conduit.audit.events import GENESIS, digest, encode
from conduit.audit.journal import journal_files


@pytest.fixture
async def journal(make_auditor, tmp_path) -> Path:
    auditor = await make_auditor(rotate_size=1500)
    for i in range(1, 31):
        await auditor.record("file.upload", "success", principal="alice", path=f"/fw/{i}.bin")
    await auditor.close()
    return tmp_path / "audit"


def key(tmp_path):
    return load_public_key(tmp_path / "audit_ed25519.pub")


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def find(directory: Path, seq: int) -> tuple[Path, int]:
    for path in journal_files(directory):
        for i, line in enumerate(lines_of(path)):
            if json.loads(line)["seq"] == seq:
                return path, i
    raise LookupError(seq)


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_intact_journal_verifies(journal, tmp_path):
    report = verify(journal, key(tmp_path))
    assert report.ok and report.checkpoints >= 2 and not report.unsealed


def test_altered_byte(journal, tmp_path):
    path, i = find(journal, 5)
    lines = lines_of(path)
    lines[i] = lines[i].replace(b'"path":"/fw/', b'"path":"/fx/')
    rewrite(path, lines)
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "altered" and fault.seq == 5


def test_altered_byte_breaking_json(journal, tmp_path):
    path, i = find(journal, 7)
    lines = lines_of(path)
    lines[i] = lines[i][:10] + b"\x00" + lines[i][11:]
    rewrite(path, lines)
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "altered" and f"{path.name}:{i + 1}" in str(fault)


def test_deleted_record(journal, tmp_path):
    path, i = find(journal, 6)
    lines = lines_of(path)
    del lines[i]
    rewrite(path, lines)
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "deleted" and fault.seq == 7 and "seq 6" in fault.detail


def test_reordered_records(journal, tmp_path):
    path, i = find(journal, 4)
    lines = lines_of(path)
    if json.loads(lines[i + 1])["seq"] != 5:
        pytest.skip("layout")
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    rewrite(path, lines)
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "reordered" and fault.seq == 5


def test_truncated_tail(journal, tmp_path):
    path = journal_files(journal)[-1]
    lines = lines_of(path)
    rewrite(path, lines[:-2])
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "truncated"


def test_truncated_rotated_file(journal, tmp_path):
    path = journal_files(journal)[0]
    rewrite(path, lines_of(path)[:-1])
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind in ("truncated", "deleted")


def test_deleted_rotated_file(journal, tmp_path):
    journal_files(journal)[1].unlink()
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "deleted"


def reseal(directory: Path, other: Ed25519PrivateKey, edit_seq: int | None = None) -> None:
    """What an attacker without the key can do: rewrite, re-chain, sign with their own key."""
    prev = GENESIS
    last = None
    for path in journal_files(directory):
        out = []
        for raw in lines_of(path):
            rec = json.loads(raw)
            if rec["seq"] == edit_seq:
                rec["principal"] = "mallory"
            rec["prev"] = prev
            if rec["type"] == "audit.checkpoint":
                rec.update(
                    checkpoint.seal(other, rec["node"], rec["seq"], rec["ts"], prev, rec["reason"])
                )
            line = encode(rec)
            prev = digest(line)
            out.append(line + b"\n")
            last = rec
        rewrite(path, out)
    state = {"file": "x", "seq": last["seq"], "hash": prev, "record": last}
    (directory / "checkpoint.json").write_text(json.dumps(state))


def test_resealed_with_another_key(journal, tmp_path):
    reseal(journal, Ed25519PrivateKey.generate(), edit_seq=3)
    report = verify(journal, key(tmp_path))
    assert report.broken and report.broken.kind == "re-sealed"
    assert "another key" in report.broken.detail
    # the chain itself is consistent: without the key the rewrite would pass
    assert verify(journal, None).ok


def test_rechained_without_resigning(journal, tmp_path):
    _path, _i = find(journal, 2)
    prev = GENESIS
    for p in journal_files(journal):
        out = []
        for raw in lines_of(p):
            rec = json.loads(raw)
            if rec["seq"] == 2:
                rec["path"] = "/fw/evil.bin"
            rec["prev"] = prev
            line = encode(rec)
            prev = digest(line)
            out.append(line + b"\n")
        rewrite(p, out)
    fault = verify(journal, key(tmp_path)).broken
    assert fault and fault.kind == "altered" and "rewritten" in fault.detail


def test_torn_last_line_is_a_note(journal, tmp_path):
    path = journal_files(journal)[-1]
    with path.open("ab") as f:
        f.write(b'{"seq":')
    report = verify(journal, key(tmp_path))
    assert report.ok and any("torn" in n for n in report.notes)


def test_verify_from_a_later_file(journal, tmp_path):
    files = journal_files(journal)
    files[0].unlink()  # archived away
    assert verify(journal, key(tmp_path), start=files[1]).ok
