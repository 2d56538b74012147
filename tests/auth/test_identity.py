"""Identity.check_certificate on certificates ssh-keygen makes, without a gateway.

What the real-client tests cannot reach: a host certificate offered as a
user one (OpenSSH clients will not offer it), a certificate without
principals, the clock-skew grace, CA-wide revocation by the CA's own key.
"""

from __future__ import annotations

import base64
import subprocess
import time
from ipaddress import ip_address
from pathlib import Path

import asyncssh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conduit.auth import certs
from conduit.auth.identity import Identity
from conduit.auth.revoked import Revocation
from tests.support.gateway import make_key

HERE = ip_address("127.0.0.1")


def certificate(folder: Path, ca: Path, name: str, *options: str) -> certs.Certificate:
    key = make_key(folder, name)
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", name, "-z", "7", *options, f"{key}.pub"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    text = Path(f"{key}-cert.pub").read_text().split()[1]

    return certs.parse(base64.b64decode(text))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Identity]:
    folder = tmp_path_factory.mktemp("ident")
    ca = make_key(folder, "ca")
    ca_key = asyncssh.read_public_key(f"{ca}.pub")
    identity = Identity(
        keys={},
        principals={"carol": frozenset({"ops"})},
        cas={bytes(ca_key.public_data): ca_key.get_fingerprint()},
    )
    return folder, ca, identity


def test_host_certificate_refused(setup: tuple[Path, Path, Identity]) -> None:
    folder, ca, identity = setup
    cert = certificate(folder, ca, "host", "-h", "-n", "ops")
    verdict = identity.check_certificate("carol", cert, HERE)
    assert verdict.reason == "a host certificate cannot log in as a user"


def test_no_principals_refused(setup: tuple[Path, Path, Identity]) -> None:
    folder, ca, identity = setup
    cert = certificate(folder, ca, "nobody")
    assert (
        identity.check_certificate("carol", cert, HERE).reason == "certificate names no principal"
    )
    assert identity.check_certificate("zed", cert, HERE).reason == "unknown user"


def test_skew_grace_before_valid_after_only(setup: tuple[Path, Path, Identity]) -> None:
    folder, ca, identity = setup
    cert = certificate(folder, ca, "fresh", "-n", "ops", "-V", "+30s:+1h")
    now = time.time()
    assert identity.check_certificate("carol", cert, HERE, now=now).allowed
    assert identity.check_certificate("carol", cert, HERE, now=now - 60).reason == (
        "certificate not yet valid"
    )
    late = cert.valid_before
    assert identity.check_certificate("carol", cert, HERE, now=late).reason == "certificate expired"


def test_ca_wide_revocation_by_the_ca_key(setup: tuple[Path, Path, Identity]) -> None:
    folder, ca, identity = setup
    cert = certificate(folder, ca, "anyone", "-n", "ops")
    assert identity.check_certificate("carol", cert, HERE).allowed
    revoked = Identity(
        identity.keys,
        identity.principals,
        identity.cas,
        Revocation(keys=frozenset({cert.ca_blob})),
    )
    assert revoked.check_certificate("carol", cert, HERE).reason == (
        "certificate's CA key revoked (listed in revoked_keys)"
    )
    by_key = Identity(
        identity.keys,
        identity.principals,
        identity.cas,
        Revocation(keys=frozenset({cert.key_blob})),
    )
    assert by_key.check_certificate("carol", cert, HERE).reason == (
        "certificate's key revoked (listed in revoked_keys)"
    )


def test_tampered_certificate_is_refused(setup: tuple[Path, Path, Identity]) -> None:
    folder, ca, _ = setup
    key = make_key(folder, "tamper")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "t", "-n", "ops", f"{key}.pub"],
        check=True,
        capture_output=True,
    )

    blob = bytearray(base64.b64decode(Path(f"{key}-cert.pub").read_text().split()[1]))
    index = blob.find(b"ops")
    blob[index] = ord("x")  # "xps": the CA never signed that
    forged = certs.parse(bytes(blob))
    assert forged.principals == ("xps",)
    verdict = setup[2].check_certificate("carol", forged, HERE)
    assert verdict.reason == "invalid CA signature on the certificate"
    with pytest.raises(certs.CertificateError, match="truncated"):
        certs.parse(bytes(blob[:60]))


def test_source_address_on_a_dual_stack_socket(setup: tuple[Path, Path, Identity]) -> None:
    folder, ca, identity = setup
    cert = certificate(folder, ca, "pinned", "-n", "ops", "-O", "source-address=127.0.0.0/8")
    assert identity.check_certificate("carol", cert, ip_address("::ffff:127.0.0.1")).allowed
    assert identity.check_certificate("carol", cert, ip_address("10.1.1.1")).reason == (
        "source address 10.1.1.1 not in the certificate's source-address 127.0.0.0/8"
    )


def _signed_blob() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        ca, key = make_key(path, "ca"), make_key(path, "u")
        subprocess.run(
            ["ssh-keygen", "-q", "-s", str(ca), "-I", "x", "-n", "a", "-O",
             "source-address=10.0.0.0/8", f"{key}.pub"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return base64.b64decode(Path(f"{key}-cert.pub").read_text().split()[1])


_BLOB = _signed_blob()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_certificates_never_crash(data: st.DataObject) -> None:
    blob = bytearray(_BLOB)
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    candidate = bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob)
    try:
        cert = certs.parse(candidate)
    except certs.CertificateError as exc:
        assert str(exc)
    else:
        # only the untouched certificate carries its CA's signature
        assert certs.signature_valid(cert) is (candidate == _BLOB)


def test_only_keys_that_could_log_in_may_sign_a_decision(tmp_path: Path) -> None:
    """An approval is a signature by a policy user's key: a revoked key, an
    expired one or one whose options refuse every login must not release a
    file. ``from=`` does not apply (a signature is made on the host)."""
    from conduit.auth.keyline import parse_line

    def line(name: str, options: str = "") -> tuple[bytes, object]:
        pub = Path(f"{make_key(tmp_path, name)}.pub").read_text().strip()
        parsed = parse_line(f"{options} {pub}".strip())
        return parsed.blob, parsed

    good, revoked, expired, forced, elsewhere = (
        line("good"),
        line("revoked"),
        line("expired", 'expiry-time="20200101"'),
        line("forced", 'command="ls"'),
        line("elsewhere", 'from="10.9.9.9"'),
    )
    identity = Identity(
        keys={"alice": dict([good, revoked, expired, forced, elsewhere])},  # type: ignore[list-item]
        principals={},
        cas={},
        revocation=Revocation(keys=frozenset({revoked[0]})),
    )
    assert identity.signers()["alice"] == {good[0], elsewhere[0]}
    assert identity.keys_of("alice") == {good[0], revoked[0], expired[0], forced[0], elsewhere[0]}
