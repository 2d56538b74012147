"""The KRL parser against KRLs ``ssh-keygen -k`` writes, and against garbage.

Real KRLs cover every section ssh-keygen emits (serial lists, ranges and
bitmaps, key ids, explicit keys, SHA1/SHA256 hashes); hypothesis then feeds
the parser truncated, mutated and random bytes: the only acceptable failure
is a :class:`KRLError` with a message.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import asyncssh
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.auth import krl
from conduit.auth.revoked import RevocationError, load
from tests.support.gateway import make_key


def blob(pub: Path) -> bytes:
    return bytes(asyncssh.read_public_key(pub).public_data)


def make_krl(folder: Path, name: str, spec: str, ca: Path | None = None) -> bytes:
    (folder / f"{name}.spec").write_text(spec)
    out = folder / f"{name}.krl"
    args = ["-s", f"{ca}.pub"] if ca else []
    subprocess.run(
        ["ssh-keygen", "-q", "-k", "-f", str(out), *args, str(folder / f"{name}.spec")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return out.read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("krl")
    return {
        "folder": folder,
        "ca": make_key(folder, "ca"),
        "other": make_key(folder, "other"),
        "k1": make_key(folder, "k1"),
        "k2": make_key(folder, "k2"),
        "k3": make_key(folder, "k3"),
    }


def test_serials_ranges_bitmaps_and_ids(pki: dict[str, Path]) -> None:
    # ssh-keygen picks list, range or bitmap encodings by density: cover all three
    spec = "serial: 5\nserial: 10-20\nserial: 100000-200000\nid: bob\n"
    spec += "".join(f"serial: {n}\n" for n in range(1000, 3000, 7))  # sparse: a list
    spec += "".join(f"serial: {n}\n" for n in range(5000, 5100, 2))  # dense: a bitmap
    data = make_krl(pki["folder"], "serials", spec, pki["ca"])
    parsed = krl.parse(data)
    ca, other = blob(pki["ca"].with_suffix(".pub")), blob(pki["other"].with_suffix(".pub"))
    revoked = {5, 10, 15, 20, 100000, 150000, 200000, 1000, 1007, 2995, 5000, 5002, 5098}
    kept = {1, 4, 6, 9, 21, 99999, 200001, 1001, 5001, 5099, 5100, 2**64 - 1}
    for serial in revoked:
        assert parsed.cert_revoked(ca, serial, "x") is not None, serial
        assert parsed.cert_revoked(other, serial, "x") is None, serial
    for serial in kept:
        assert parsed.cert_revoked(ca, serial, "x") is None, serial
    assert parsed.cert_revoked(ca, 1, "bob") == "certificate key id revoked for this CA in the KRL"
    assert parsed.cert_revoked(ca, 0, "alice") is None


def test_serial_zero_is_never_revoked_by_serial(pki: dict[str, Path]) -> None:
    parsed = krl.parse(make_krl(pki["folder"], "range", "serial: 1-100\n", pki["ca"]))
    assert parsed.cert_revoked(blob(pki["ca"].with_suffix(".pub")), 0, "") is None


def test_explicit_keys_and_hashes(pki: dict[str, Path]) -> None:
    k1, k2, k3 = (pki[k].with_suffix(".pub") for k in ("k1", "k2", "k3"))
    spec = f"key: {k1.read_text()}sha1: {k2.read_text()}sha256: {k3.read_text()}"
    parsed = krl.parse(make_krl(pki["folder"], "keys", spec))
    assert parsed.key_revoked(blob(k1)) == "key revoked (listed in the KRL)"
    assert parsed.key_revoked(blob(k2)) == "key revoked (SHA1 fingerprint in the KRL)"
    assert parsed.key_revoked(blob(k3)) == "key revoked (SHA256 fingerprint in the KRL)"
    assert parsed.key_revoked(blob(pki["ca"].with_suffix(".pub"))) is None


def test_text_list_and_errors(tmp_path: Path, pki: dict[str, Path]) -> None:
    listed = tmp_path / "revoked.txt"
    listed.write_text(f"# gone\n\n{pki['k1'].with_suffix('.pub').read_text()}")
    revocation = load(listed)
    assert revocation.key_revoked(blob(pki["k1"].with_suffix(".pub"))) is not None
    assert revocation.key_revoked(blob(pki["k2"].with_suffix(".pub"))) is None
    listed.write_text("ssh-ed25519 AAAAnot-base64\n")
    with pytest.raises(RevocationError, match=r"revoked.txt line 1: not an OpenSSH public key"):
        load(listed)
    with pytest.raises(RevocationError, match="no such file"):
        load(tmp_path / "missing.krl")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RevocationError, match="neither an OpenSSH KRL nor a text list"):
        load(tmp_path / "bin")


def _header() -> bytes:
    return krl.MAGIC + struct.pack(">IQQQ", 1, 1, 0, 0) + b"\0\0\0\0" + b"\0\0\0\0"


def _section(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SSHKRL\n\0", "truncated KRL header"),
        (krl.MAGIC + struct.pack(">I", 2), "format version 2 is not supported"),
        (_header() + b"\x09\0\0\0\0", "unknown KRL section type 9"),
        (_header() + _section(4, b""), "signed KRLs are not supported"),
        (_header() + _section(3, b"\0\0\0\x05abcde"), "5-byte hash"),
        (_header() + _section(2, b""), "empty explicit key section"),
        (
            _header() + _section(1, b"\0\0\0\0\0\0\0\0" + _section(0x20, b"\0" * 8)),
            "without naming",
        ),
        (
            _header() + _section(255, b"\0\0\0\x03ext\x01\0\0\0\0"),
            "critical KRL extension 'ext' is not supported",
        ),
        (_header() + b"\x01\0\0\0\x10ab", "truncated KRL section"),
    ],
)
def test_malformed_krls_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(krl.KRLError, match=message):
        krl.parse(data)


def test_noncritical_extension_is_ignored() -> None:
    parsed = krl.parse(_header() + _section(255, b"\0\0\0\x03ext\x00\0\0\0\0"))
    assert not parsed.keys and not parsed.certs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        krl.parse(krl.MAGIC + data)
    except krl.KRLError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_krl_never_crashes(data: st.DataObject) -> None:
    original = _REAL_KRL
    cut = data.draw(st.integers(0, len(original)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), max_size=4)
    )
    mutated = bytearray(original[:cut] if data.draw(st.booleans()) else original)
    for index, value in flips:
        if index < len(mutated):
            mutated[index] = value
    try:
        krl.parse(bytes(mutated))
    except krl.KRLError as exc:
        assert str(exc)


def _real_krl() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        ca = make_key(path, "ca")
        return make_krl(path, "real", "serial: 5\nserial: 10-20\nserial: 30-90\nid: x\n", ca)


_REAL_KRL = _real_krl()


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")  # a leading zero byte: positive
    return struct.pack(">I", len(raw)) + raw


def test_overlapping_bitmaps_are_all_consulted() -> None:
    # OpenSSH never writes these; a hand-made KRL may: a long bitmap, then a
    # short one starting inside it, must both still count.
    ca = b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + b"\x01" * 32
    long_map = struct.pack(">Q", 100) + _mpint(1 << 50)  # serial 150
    short_map = struct.pack(">Q", 120) + _mpint(1)  # serial 120
    body = struct.pack(">I", len(ca)) + ca + b"\0\0\0\0"
    body += _section(0x22, long_map) + _section(0x22, short_map)
    parsed = krl.parse(_header() + _section(1, body))
    assert parsed.cert_revoked(ca, 150, "") is not None
    assert parsed.cert_revoked(ca, 120, "") is not None
    assert all(parsed.cert_revoked(ca, n, "") is None for n in (99, 100, 121, 149, 151, 400))
