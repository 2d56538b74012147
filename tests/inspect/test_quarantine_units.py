"""The quarantine's parts without a gateway: signatures, rows, evidence names, sweep."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conduit.config.inspect import InspectConfig
from conduit.errors import TransferRefused
from conduit.inspect import approval
from conduit.inspect.base import State, Stream, Subject, Verdict, WholeFileCheck
from conduit.inspect.evidence import classify, evidence_kind, safe_name, subject_of
from conduit.inspect.items import Item, Items, ItemState
from conduit.inspect.quarantine import Arrival, Quarantine
from conduit.state import StateDB
from tests.inspect.checks import ChecksForTests
from tests.support.gateway import make_key


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, Path]:
    folder = tmp_path_factory.mktemp("approval-keys")
    key, other = make_key(folder, "bob"), make_key(folder, "eve")
    return key, approval.public_blob(key), other


def test_a_signed_decision_verifies_only_for_its_text_and_signer(
    signer: tuple[Path, bytes, Path],
) -> None:
    key, blob, other = signer
    keys = {"bob": frozenset({blob}), "eve": frozenset({approval.public_blob(other)})}
    assert approval.owner(blob, keys) == "bob"
    text = approval.message("q-1", "ab" * 32, "approve")
    signature = approval.sign(key, text)
    approval.verify(signature, text, "bob", keys)
    hostile = [
        (signature, approval.message("q-1", "cd" * 32, "approve"), "bob"),  # other bytes
        (signature, approval.message("q-2", "ab" * 32, "approve"), "bob"),  # other item
        (signature, approval.message("q-1", "ab" * 32, "reject"), "bob"),  # other verdict
        (signature, text, "eve"),  # someone else's name
        (approval.sign(other, text), text, "bob"),  # someone else's key
        ("-----BEGIN SSH SIGNATURE-----\ngarbage\n-----END SSH SIGNATURE-----\n", text, "bob"),
        ("", text, "bob"),
    ]
    for sig, message, user in hostile:
        with pytest.raises(approval.ApprovalError, match="does not verify"):
            approval.verify(sig, message, user, keys)
    with pytest.raises(approval.ApprovalError, match="not a user"):
        approval.verify(signature, text, "mallory", keys)
    with pytest.raises(approval.ApprovalError, match="unknown verdict"):
        approval.message("q-1", "ab" * 32, "maybe")


def test_a_key_nobody_or_several_users_own_names_no_approver(
    signer: tuple[Path, bytes, Path], tmp_path: Path
) -> None:
    _, blob, other = signer
    with pytest.raises(approval.ApprovalError, match="no user of the policy"):
        approval.owner(approval.public_blob(other), {"bob": frozenset({blob})})
    with pytest.raises(approval.ApprovalError, match="several users"):
        approval.owner(blob, {"bob": frozenset({blob}), "bob2": frozenset({blob})})
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(approval.ApprovalError, match="cannot read the key"):
        approval.public_blob(tmp_path / "junk")


def test_evidence_names() -> None:
    # One rule with the checks: a manifest's own signature is manifest evidence.
    assert evidence_kind("fw.bin.sig") == "signature" and subject_of("fw.bin.sig") == "fw.bin"
    assert evidence_kind("fw.bin.asc") == "signature" and subject_of("/a/fw.bin.asc") == "fw.bin"
    for manifest in ("SHA256SUMS", "fw.sha256", "SHA256SUMS.sig", "SHA256SUMS.asc", "x.sha256.sig"):
        assert evidence_kind(manifest) == "manifest" and subject_of(manifest) is None, manifest
    for payload in ("fw.bin", ".sig", ".asc", ".sha256", "sig", "fw.SIG.bin", "sha256sums"):
        assert evidence_kind(payload) is None, payload
    assert classify("a.sig", b"-----BEGIN SSH SIGNATURE-----\n") == "ssh"
    assert classify("a.sig", b"\x89\x01") == "openpgp"
    assert classify("a.asc", b"-----BEGIN PGP SIGNATURE-----") == "openpgp"
    assert classify("SHA256SUMS.sig", b"-----BEGIN SSH SIGNATURE-----\n") == "manifest"
    with pytest.raises(ValueError):
        classify("a.bin", b"")
    for bad in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(ValueError):
            safe_name(bad)


def _item(ident: str, path: str = "/fw/a.bin") -> Item:
    return Item(
        ident, 1.0, 1.0, "alice", "127.0.0.1", "c", path, "area", "fw", 1, "ab", ItemState.HELD
    )


def test_two_deciders_racing_cannot_both_win(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    items = Items(db)
    items.add(_item("q-1"))
    assert items.move("q-1", ItemState.APPROVED, expect=(ItemState.HELD,), sha256="ab")
    assert not items.move("q-1", ItemState.REJECTED, expect=(ItemState.HELD,))
    assert not items.move("q-1", ItemState.COMMITTED, expect=(ItemState.APPROVED,), sha256="cd")
    # one request at a time: a second waits until the gateway carried out the first
    items.add(_item("q-2"))
    assert items.ask("q-2", {"action": "approve"}, expect=(ItemState.HELD,))
    assert not items.ask("q-2", {"action": "reject"}, expect=(ItemState.HELD,))
    assert [i.id for i in items.requested()] == ["q-2"]
    # a second process sees the same rows
    other = Items(StateDB.open(tmp_path))
    assert other.get("q-1").state is ItemState.APPROVED  # type: ignore[union-attr]


def test_a_failing_stream_check_refuses_and_keeps_the_bytes(tmp_path: Path) -> None:
    q = Quarantine(tmp_path, StateDB.open(tmp_path), InspectConfig(), ChecksForTests())
    arrival = Arrival("alice", "127.0.0.1", "scanned", "/scan/x.bin", "area", "scan", False, "t1")

    async def scenario() -> None:
        receiving = q.receive(arrival)
        await receiving.write(0, b"EVIL and more")
        await receiving.feed(b"EVIL and more")
        receiving.whole("ab" * 32, 13)
        with pytest.raises(TransferRefused) as refused:
            await receiving.commit()
        assert refused.value.reason == "magic: forbidden content"
        assert receiving.id in refused.value.detail and "ab" * 32 in refused.value.detail
        await receiving.abort()  # what the pipeline does next: the kept bytes stay
        assert q.data(receiving.id).read_bytes() == b"EVIL and more"

    asyncio.run(scenario())
    assert q.items.find()[0].state is ItemState.REJECTED


def test_the_sweep_removes_only_what_no_row_speaks_for(tmp_path: Path) -> None:
    q = Quarantine(tmp_path, StateDB.open(tmp_path), InspectConfig())
    q.items.add(_item("q-kept"))
    q.data("q-kept").write_bytes(b"x")
    (q.root / ".part-q-dead").write_bytes(b"partial")
    q.data("q-orphan").write_bytes(b"no row")
    (q.root / "evidence" / "e-orphan").write_bytes(b"no row")
    assert q.sweep() == 3
    assert sorted(p.name for p in q.root.iterdir()) == ["evidence", "q-kept.data"]
    assert (q.root.stat().st_mode & 0o777) == 0o700


def test_evidence_keeps_its_base_name_and_the_sweep_knows_its_folders(tmp_path: Path) -> None:
    q = Quarantine(tmp_path, StateDB.open(tmp_path), InspectConfig())

    async def keep(path: str, data: bytes) -> str:
        arrival = Arrival("alice", "127.0.0.1", "c", path, "area", "fw", False, "t")
        receiving = q.receive_evidence(arrival)
        await receiving.write(0, data)
        receiving.whole("cd" * 32, len(data))
        await receiving.commit()
        return receiving.id

    sums = asyncio.run(keep("/fw/SHA256SUMS", b"x"))
    sig = asyncio.run(keep("/fw/SHA256SUMS.sig", b"-----BEGIN SSH SIGNATURE-----\n"))
    own = asyncio.run(keep("/fw/a.bin.sig", b"-----BEGIN SSH SIGNATURE-----\n"))
    found = q.evidence_for("/fw/a.bin")
    # the manifest and its signature, by their names: the check pairs them so
    assert [p.name for p in found["manifest"]] == ["SHA256SUMS", "SHA256SUMS.sig"]
    assert [p.parent.name for p in found["manifest"]] == [sums, sig]
    assert [p.name for p in found["ssh"]] == ["a.bin.sig"]
    assert "ssh" not in q.evidence_for("/fw/b.bin")  # a.bin's signature is a.bin's only
    (q.root / "evidence" / "e-orphan").mkdir()
    (q.root / "evidence" / "e-orphan" / "x.sig").write_bytes(b"no row")
    (q.root / "evidence" / ".part-e-dead").write_bytes(b"partial")
    assert q.sweep() == 2
    assert sorted(p.name for p in (q.root / "evidence").iterdir()) == sorted([sums, sig, own])
    q.drop_evidence(own)
    assert not (q.root / "evidence" / own).exists()
    assert "ssh" not in q.evidence_for("/fw/a.bin")


class _SlowScan:
    """A stream check whose verdict waits until the whole-file check has run
    (as clamd's comes only after its scan of the whole file)."""

    check = "scan"

    def __init__(self, whole_ran: asyncio.Event) -> None:
        self.whole_ran = whole_ran

    async def feed(self, chunk: bytes) -> None:
        return None

    async def finish(self) -> Verdict:
        await asyncio.wait_for(self.whole_ran.wait(), 10)
        return Verdict("scan", State.FAILED, "scan: malware found (X)", "clamd: X FOUND")

    async def abort(self) -> None:
        return None


class _Whole:
    check = "signature"

    def __init__(self, whole_ran: asyncio.Event) -> None:
        self.whole_ran = whole_ran
        self.saw = b""

    async def verify(self, subject: Subject) -> Verdict:
        self.saw = subject.path.read_bytes()  # the kept, fsynced file is there already
        self.whole_ran.set()
        return Verdict("signature", State.PASSED, "signature: good")


def test_whole_file_checks_run_while_the_stream_verdict_is_awaited(tmp_path: Path) -> None:
    async def scenario() -> tuple[_Whole, Quarantine]:
        ran = asyncio.Event()
        whole = _Whole(ran)

        class Checks:
            enforceable = ChecksForTests.enforceable

            def streams(self, conduit: str) -> list[Stream]:
                return [_SlowScan(ran)]

            def whole_file(self, conduit: str) -> list[WholeFileCheck]:
                return [whole]

        q = Quarantine(tmp_path, StateDB.open(tmp_path), InspectConfig(), Checks())
        arrival = Arrival("alice", "127.0.0.1", "c", "/fw/x.bin", "area", "fw", False, "t1")
        receiving = q.receive(arrival)
        await receiving.write(0, b"firmware")
        receiving.whole("cd" * 32, 8)
        # sequential checks would wait 10 s for a verdict that never comes, then
        # fail with TimeoutError; concurrent ones see both verdicts
        with pytest.raises(TransferRefused) as refused:
            await asyncio.wait_for(receiving.commit(), 5)
        assert refused.value.reason == "scan: malware found (X)"  # a stream failure first
        return whole, q

    whole, q = asyncio.run(scenario())
    assert whole.saw == b"firmware"
    [item] = q.items.find()
    assert item.state is ItemState.REJECTED
    assert [(v["check"], v["state"]) for v in item.verdicts] == [
        ("scan", "failed"),
        ("signature", "passed"),
    ]
