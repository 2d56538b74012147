"""The signature obligation with real ssh-keygen and gpg: each fault its own reason."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conduit.config.inspect import TrustConfig
from conduit.inspect import outcome as R
from conduit.inspect.base import State, Subject, Verdict
from conduit.inspect.openpgp import Keyring
from conduit.inspect.signature import Anchors, SignatureCheck
from tests.support.signers import PgpKey, pgp_key, revoke, ssh_key, ssh_sign

NAMESPACE = "firmware"


@dataclass
class World:
    root: Path
    vendor_ssh: Path
    stranger_ssh: Path
    old_ssh: Path
    vendor: PgpKey
    stranger: PgpKey
    expired: PgpKey
    revoked: PgpKey
    trust: TrustConfig
    keyrings: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("sig")
    keys = root / "keys"
    keys.mkdir()
    vendor_ssh, stranger_ssh, old_ssh = (ssh_key(keys, n) for n in ("vendor", "stranger", "old"))
    allowed = root / "allowed_signers"
    allowed.write_text(
        f"vendor@example.com {(keys / 'vendor.pub').read_text()}"
        f'old@example.com valid-before="20200101" {(keys / "old.pub").read_text()}'
    )
    vendor = pgp_key(keys, "pvendor")
    stranger = pgp_key(keys, "pstranger")
    expired = pgp_key(keys, "pexpired", expire="1y", faked="20200101T000000")
    revoked = pgp_key(keys, "prevoked")
    world = World(
        root,
        vendor_ssh,
        stranger_ssh,
        old_ssh,
        vendor,
        stranger,
        expired,
        revoked,
        TrustConfig(
            ssh_allowed_signers=allowed,
            ssh_namespace=NAMESPACE,
            openpgp_keys=[vendor.public, expired.public, revoked.public],
        ),
        root / "data" / "inspect" / "gnupg",
    )
    yield world
    for key in (vendor, stranger, expired, revoked):
        key.stop()


def firmware(folder: Path, data: bytes | None = None, name: str = "rtu-4.2.bin") -> Path:
    path = folder / name
    path.write_bytes(data if data is not None else os.urandom(5000))
    return path


def subject(path: Path, **evidence: list[Path]) -> Subject:
    data = path.read_bytes()
    return Subject(
        path,
        f"/firmware/{path.name}",
        hashlib.sha256(data).hexdigest(),
        len(data),
        {kind: tuple(paths) for kind, paths in evidence.items()},
    )


async def check(
    world: World, s: Subject, *, trust: TrustConfig | None = None, max_evidence: int = 1 << 20
) -> Verdict:
    config = trust or world.trust
    keyring = (
        Keyring(world.keyrings, "vendor", config.openpgp_keys, 20.0)
        if config.openpgp_keys
        else None
    )
    return await SignatureCheck([Anchors("vendor", config, keyring)], max_evidence, 20.0).verify(s)


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))


# -- OpenSSH ------------------------------------------------------------------


async def test_ssh_good_signature_passes(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    verdict = await check(world, subject(fw, signature=[ssh_sign(world.vendor_ssh, fw, NAMESPACE)]))
    assert verdict.state is State.PASSED, verdict.detail
    assert "vendor@example.com" in verdict.detail and verdict.duration > 0


async def test_ssh_tampered_byte_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    sig = ssh_sign(world.vendor_ssh, fw, NAMESPACE)
    tamper(fw)
    verdict = await check(world, subject(fw, signature=[sig]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.MISMATCH)


async def test_ssh_wrong_key_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    verdict = await check(
        world, subject(fw, signature=[ssh_sign(world.stranger_ssh, fw, NAMESPACE)])
    )
    assert (verdict.state, verdict.reason) == (State.FAILED, R.UNTRUSTED)


async def test_ssh_wrong_namespace_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    verdict = await check(world, subject(fw, signature=[ssh_sign(world.vendor_ssh, fw, "file")]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.WRONG_NAMESPACE)
    assert "'file'" in verdict.detail and "'firmware'" in verdict.detail


async def test_ssh_expired_key_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    verdict = await check(world, subject(fw, signature=[ssh_sign(world.old_ssh, fw, NAMESPACE)]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.EXPIRED)


@pytest.mark.parametrize(
    "text",
    [
        b"-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----\n",
        b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n",
        b"-----BEGIN SSH SIGNATURE-----\nAAAA\n",
    ],
)
async def test_malformed_ssh_armour_fails(world: World, tmp_path: Path, text: bytes) -> None:
    fw = firmware(tmp_path)
    sig = tmp_path / f"{fw.name}.sig"
    sig.write_bytes(text)
    verdict = await check(world, subject(fw, signature=[sig]))
    assert verdict.state is State.FAILED
    assert verdict.reason in (
        R.MALFORMED,
        R.UNTRUSTED,
    )  # unterminated armour is OpenPGP's to refuse
    assert verdict.reason == R.MALFORMED or not text.rstrip().endswith(b"-----")


# -- OpenPGP ------------------------------------------------------------------


@pytest.mark.parametrize("armor", [False, True])
async def test_pgp_good_signature_passes(world: World, tmp_path: Path, armor: bool) -> None:
    fw = firmware(tmp_path)
    verdict = await check(world, subject(fw, signature=[world.vendor.sign(fw, armor=armor)]))
    assert verdict.state is State.PASSED, verdict.detail
    assert world.vendor.fingerprint in verdict.detail


async def test_pgp_tampered_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    sig = world.vendor.sign(fw)
    tamper(fw)
    verdict = await check(world, subject(fw, signature=[sig]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.MISMATCH)


async def test_pgp_untrusted_key_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    verdict = await check(world, subject(fw, signature=[world.stranger.sign(fw, armor=True)]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.UNTRUSTED)


async def test_pgp_expired_key_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    sig = world.expired.sign(fw, faked="20200601T000000")
    verdict = await check(world, subject(fw, signature=[sig]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.EXPIRED), verdict.detail


async def test_pgp_revoked_key_fails(tmp_path: Path, world: World) -> None:
    fw = firmware(tmp_path)
    sig = world.revoked.sign(fw)
    if "REVOKED" not in world.revoked.public.read_text():
        revoke(world.revoked)
    trust = world.trust.model_copy(update={"openpgp_keys": [world.revoked.public]})
    verdict = await check(world, subject(fw, signature=[sig]), trust=trust)
    assert (verdict.state, verdict.reason) == (State.FAILED, R.REVOKED), verdict.detail


@pytest.mark.parametrize(
    "text",
    [
        b"-----BEGIN PGP SIGNATURE-----\n\nnot base64 at all\n-----END PGP SIGNATURE-----\n",
        b"\x89\x00\x05garbage",
        b"",
    ],
)
async def test_malformed_pgp_signature_fails(world: World, tmp_path: Path, text: bytes) -> None:
    fw = firmware(tmp_path)
    sig = tmp_path / f"{fw.name}.asc"
    sig.write_bytes(text)
    verdict = await check(world, subject(fw, signature=[sig]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.MALFORMED), verdict.detail


async def test_the_keyring_is_the_gateways_own(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "users-gnupg"
    users.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(users))
    fw = firmware(tmp_path)
    assert (await check(world, subject(fw, signature=[world.vendor.sign(fw)]))).passed
    assert list(users.iterdir()) == []
    assert stat.S_IMODE(world.keyrings.stat().st_mode) == 0o700
    homes = [p for p in world.keyrings.iterdir() if p.name.startswith("vendor-")]
    assert homes and all(stat.S_IMODE(h.stat().st_mode) == 0o700 for h in homes)


# -- evidence in general -------------------------------------------------------


async def test_no_evidence_is_pending(world: World, tmp_path: Path) -> None:
    verdict = await check(world, subject(firmware(tmp_path)))
    assert (verdict.state, verdict.reason) == (State.PENDING, R.PENDING)


async def test_huge_evidence_is_refused_unread(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    sig = tmp_path / f"{fw.name}.sig"
    sig.write_bytes(b"-----BEGIN SSH SIGNATURE-----\n" + b"A" * 100_000)
    verdict = await check(world, subject(fw, signature=[sig]), max_evidence=4096)
    assert (verdict.state, verdict.reason) == (State.FAILED, R.TOO_LARGE)


async def test_one_good_signature_among_bad_ones_passes(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    bad = ssh_sign(world.stranger_ssh, fw, NAMESPACE, tmp_path / "bad.sig")
    good = world.vendor.sign(fw, armor=True)
    assert (await check(world, subject(fw, signature=[bad, good]))).passed


async def test_the_most_telling_reason_wins(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    untrusted = ssh_sign(world.stranger_ssh, fw, NAMESPACE, tmp_path / "a.sig")
    tampered = world.vendor.sign(fw, out=tmp_path / "b.sig")
    tamper(fw)
    verdict = await check(world, subject(fw, signature=[untrusted, tampered]))
    assert verdict.reason == R.MISMATCH
    assert "not in trust" in verdict.detail  # every piece is in the journal's detail


# -- vendor lists and travelling manifests ------------------------------------


def sums(folder: Path, lines: list[str], name: str = "SHA256SUMS", crlf: bool = False) -> Path:
    path = folder / name
    end = "\r\n" if crlf else "\n"
    path.write_text("".join(line + end for line in lines), newline="")
    return path


async def test_a_vendor_list_in_the_trust_set(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    s = subject(fw)
    lists = tmp_path / "lists"
    lists.mkdir()
    listed = world.trust.model_copy(
        update={"sha256_lists": [sums(lists, [f"{s.sha256}  {fw.name}"], "A")]}
    )
    assert (await check(world, s, trust=listed)).passed
    wrong = world.trust.model_copy(
        update={"sha256_lists": [sums(lists, [f"{'0' * 64}  {fw.name}"], "B")]}
    )
    verdict = await check(world, s, trust=wrong)
    assert (verdict.state, verdict.reason) == (State.FAILED, R.HASH_MISMATCH)
    other = world.trust.model_copy(
        update={"sha256_lists": [sums(lists, [f"{s.sha256}  other.bin"], "C")]}
    )
    verdict = await check(world, s, trust=other)
    assert verdict.state is State.PENDING and "does not list" in verdict.detail


@pytest.mark.parametrize("method", ["ssh", "pgp"])
@pytest.mark.parametrize("crlf", [False, True])
async def test_a_signed_travelling_manifest_vouches(
    world: World, tmp_path: Path, method: str, crlf: bool
) -> None:
    fw = firmware(tmp_path)
    s = subject(fw)
    manifest = sums(tmp_path, [f"{'1' * 64}  other.bin", f"{s.sha256} *{fw.name}"], crlf=crlf)
    sig = (
        ssh_sign(world.vendor_ssh, manifest, NAMESPACE)
        if method == "ssh"
        else world.vendor.sign(manifest, armor=True)
    )
    verdict = await check(world, subject(fw, manifest=[manifest, sig]))
    assert verdict.state is State.PASSED, verdict.detail


async def test_an_unsigned_or_wrongly_signed_manifest_vouches_for_nothing(
    world: World, tmp_path: Path
) -> None:
    fw = firmware(tmp_path)
    s = subject(fw)
    manifest = sums(tmp_path, [f"{s.sha256}  {fw.name}"])
    verdict = await check(world, subject(fw, manifest=[manifest]))
    # no signature beside it (yet): the file waits for it, and expires without
    assert verdict.state is State.PENDING and "has no .sig or .asc" in verdict.detail
    sig = ssh_sign(world.stranger_ssh, manifest, NAMESPACE)
    verdict = await check(world, subject(fw, manifest=[manifest, sig]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.UNSIGNED_MANIFEST)
    sig.unlink()
    sig = world.vendor.sign(manifest)
    manifest.write_text(manifest.read_text() + f"{'2' * 64}  extra.bin\n")  # altered after signing
    verdict = await check(world, subject(fw, manifest=[manifest, sig]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.UNSIGNED_MANIFEST)


async def test_a_signed_manifest_without_the_file_or_with_another_hash(
    world: World, tmp_path: Path
) -> None:
    fw = firmware(tmp_path)
    without = sums(tmp_path, [f"{'1' * 64}  other.bin"])
    verdict = await check(
        world, subject(fw, manifest=[without, ssh_sign(world.vendor_ssh, without, NAMESPACE)])
    )
    assert (verdict.state, verdict.reason) == (State.FAILED, R.NOT_LISTED)
    other = sums(tmp_path, [f"{'1' * 64}  {fw.name}"], "B.sha256")
    verdict = await check(world, subject(fw, manifest=[other, world.vendor.sign(other)]))
    assert (verdict.state, verdict.reason) == (State.FAILED, R.HASH_MISMATCH)


async def test_a_signed_but_malformed_manifest_fails(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    s = subject(fw)
    manifest = sums(tmp_path, [f"{s.sha256}\t{fw.name}"])
    verdict = await check(
        world, subject(fw, manifest=[manifest, ssh_sign(world.vendor_ssh, manifest, NAMESPACE)])
    )
    assert (verdict.state, verdict.reason) == (State.FAILED, R.MALFORMED)
    assert "line 1" in verdict.detail


async def test_a_manifest_signature_alone_is_still_pending(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    manifest = sums(tmp_path, [f"{subject(fw).sha256}  {fw.name}"])
    sig = ssh_sign(world.vendor_ssh, manifest, NAMESPACE)
    verdict = await check(world, subject(fw, manifest=[sig]))
    assert verdict.state is State.PENDING and "without its manifest" in verdict.detail


# -- the verifiers themselves failing ------------------------------------------


async def test_a_hung_verifier_fails_closed(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw = firmware(tmp_path)
    s = subject(fw, signature=[ssh_sign(world.vendor_ssh, fw, NAMESPACE)])
    # A verifier that never answers (a real process, first on PATH). A fast real
    # ssh-keygen with a tiny timeout was not enough: on a busy machine it could
    # finish while the loop was still spawning it, and pass.
    hung = tmp_path / "bin"
    hung.mkdir()
    (hung / "ssh-keygen").write_text("#!/bin/sh\nexec sleep 60\n")
    (hung / "ssh-keygen").chmod(0o755)
    monkeypatch.setenv("PATH", f"{hung}:{os.environ['PATH']}")
    check_ = SignatureCheck([Anchors("vendor", world.trust, None)], 1 << 20, 0.3)
    verdict = await check_.verify(s)
    assert (verdict.state, verdict.reason) == (State.FAILED, R.UNAVAILABLE)
    assert "no answer within" in verdict.detail


async def test_a_missing_verifier_fails_closed(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw = firmware(tmp_path)
    s = subject(fw, signature=[world.vendor.sign(fw)])
    monkeypatch.setenv("PATH", str(tmp_path))  # no gpg here
    keyring = Keyring(tmp_path / "gnupg", "vendor", world.trust.openpgp_keys, 10.0)
    verdict = await SignatureCheck([Anchors("vendor", world.trust, keyring)], 1 << 20, 10.0).verify(
        s
    )
    assert (verdict.state, verdict.reason) == (State.FAILED, R.UNAVAILABLE)
    assert "cannot run" in verdict.detail


async def test_a_conduit_whose_trust_sets_lack_the_method(world: World, tmp_path: Path) -> None:
    fw = firmware(tmp_path)
    only_lists = TrustConfig(sha256_lists=[])
    verdict = await SignatureCheck([Anchors("lists", only_lists, None)], 1 << 20, 10.0).verify(
        subject(fw, signature=[world.vendor.sign(fw)])
    )
    assert (verdict.state, verdict.reason) == (State.FAILED, R.UNTRUSTED)
    assert "no trust set of this conduit has OpenPGP keys" in verdict.detail
