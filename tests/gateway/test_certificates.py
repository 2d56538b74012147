"""User certificates, key options and revocation, with real OpenSSH parts.

``ssh-keygen`` makes the CA, the certificates and the KRL; the OpenSSH
``sftp``/``scp``/``ssh`` clients log in with them. Each refusal must leave
the client with the plain "Permission denied" an unknown key gets, and the
journal with the full reason; nothing may raise in the gateway.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conduit.config import parse
from tests.support.gateway import (
    RunningGateway,
    make_key,
    policy_text,
    start_gateway,
    stop_gateway,
)

CERT_ONLY = ("-o", "PubkeyAcceptedAlgorithms=ssh-ed25519-cert-v01@openssh.com")


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, timeout=30)


def sign(ca: Path, key: Path, name: str, *options: str, serial: int = 1) -> Path:
    """A user certificate for ``key``, saved as ``<name>-cert.pub`` beside a copy."""
    folder = key.parent
    copy = folder / name
    copy.write_bytes(key.read_bytes())
    copy.chmod(0o600)
    (folder / f"{name}.pub").write_bytes(key.with_suffix(".pub").read_bytes())
    keygen("-s", str(ca), "-I", f"id-{name}", "-z", str(serial), *options, str(copy) + ".pub")
    return copy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_key(folder, "user_ca")
    other_ca = make_key(folder, "other_ca")
    carol = make_key(folder, "carol")
    certs = {
        "good": sign(ca, carol, "good", "-n", "carol-ops,ops", "-V", "-5m:+1h", serial=10),
        "expired": sign(ca, carol, "expired", "-n", "carol-ops", "-V", "-2h:-1h", serial=11),
        "notyet": sign(ca, carol, "notyet", "-n", "carol-ops", "-V", "+1h:+2h", serial=12),
        "wrongname": sign(ca, carol, "wrongname", "-n", "someone", serial=13),
        "elsewhere": sign(
            ca, carol, "elsewhere", "-n", "carol-ops", "-O", "source-address=10.9.9.0/24", serial=14
        ),
        "here": sign(
            ca, carol, "here", "-n", "carol-ops", "-O", "source-address=127.0.0.0/8", serial=15
        ),
        "forced": sign(ca, carol, "forced", "-n", "carol-ops", "-O", "force-command=ls", serial=16),
        "critical": sign(
            ca, carol, "critical", "-n", "carol-ops", "-O", "critical:frob@example.com=x", serial=17
        ),
        "untrusted": sign(other_ca, carol, "untrusted", "-n", "carol-ops", serial=18),
        "byserial": sign(ca, carol, "byserial", "-n", "carol-ops", serial=77),
        "byrange": sign(ca, carol, "byrange", "-n", "carol-ops", serial=1500),
        "byid": sign(ca, carol, "byid", "-n", "carol-ops", serial=19),
    }
    # the "byid" certificate's key id is what the KRL revokes
    keygen(
        "-s",
        str(ca),
        "-I",
        "revoked-id",
        "-z",
        "19",
        "-n",
        "carol-ops",
        str(certs["byid"]) + ".pub",
    )
    spec = folder / "krl.spec"
    spec.write_text("serial: 77\nserial: 1000-2000\nid: revoked-id\n")
    krl = folder / "revoked.krl"
    keygen("-k", "-f", str(krl), "-s", str(ca) + ".pub", str(spec))
    # an RSA key under an ECDSA CA: other key types take the same path
    rsa = folder / "carol_rsa"
    keygen("-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa))
    ecdsa_ca = folder / "ecdsa_ca"
    keygen("-t", "ecdsa", "-N", "", "-f", str(ecdsa_ca))
    keygen("-s", str(ecdsa_ca), "-I", "id-rsa", "-z", "30", "-n", "carol-ops", f"{rsa}.pub")
    return {
        "ca": ca,
        "other_ca": other_ca,
        "ecdsa_ca": ecdsa_ca,
        "carol": carol,
        "rsa": rsa,
        "krl": krl,
        "folder": folder,
        **certs,
    }


EXTRA = """
[users.carol]
principals = ["carol-ops"]
roles = ["engineer"]

[users.mallory]
keys = ["{mallory}"]
roles = ["engineer"]

[users.dave]
keys = ['from="10.0.0.0/8" {dave}', 'expiry-time="20200101" {dave2}', 'command="ls" {dave3}']
roles = ["engineer"]

[auth]
trusted_user_ca_keys = ["{ca}", "{ecdsa_ca}"]
revoked_keys = "{krl}"
"""


def _extra(keys: dict[str, Path], pki: dict[str, Path], dave: list[Path]) -> str:
    def pub(path: Path) -> str:
        return path.with_suffix(".pub").read_text().strip()

    # mallory's key is revoked as a plain key by the KRL (see below)
    return EXTRA.format(
        mallory=pub(keys["mallory"]),
        dave=pub(dave[0]),
        dave2=pub(dave[1]),
        dave3=pub(dave[2]),
        ca=f"{pki['ca']}.pub",
        ecdsa_ca=f"{pki['ecdsa_ca']}.pub",
        krl=pki["krl"],
    )


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path], pki: dict[str, Path]
) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("certgw")
    dave = [make_key(pki["folder"], f"dave{i}") for i in range(3)]
    # revoke mallory's plain key too: a KRL with the serial/id spec and the key
    spec = pki["folder"] / "krl.spec"
    spec.write_text(spec.read_text() + f"key: {keys['mallory'].with_suffix('.pub').read_text()}")
    keygen("-k", "-f", str(pki["krl"]), "-s", str(pki["ca"]) + ".pub", str(spec))
    text = policy_text(root, keys, _extra(keys, pki, dave))
    config = parse(text, source=root / "conduit.toml")
    running = start_gateway(config, keys, root)
    running.keys.update({"dave0": dave[0], "dave1": dave[1], "dave2": dave[2]})
    yield running
    stop_gateway(running)


def failures(gw: RunningGateway) -> list[dict[str, Any]]:
    gw.call(gw.gateway.noise.flush())
    return gw.recorder.of("auth.failure")


def reasons(gw: RunningGateway) -> set[str]:
    return {e["reason"] for e in failures(gw)}


def login(gw: RunningGateway, pki: dict[str, Path], cert: str, user: str = "carol") -> Any:
    key = pki[cert]
    # ssh -i KEY offers KEY-cert.pub itself
    return gw.sftp("ls /\n", user=user, key=key, extra=CERT_ONLY)


REFUSED = [
    ("expired", "certificate expired"),
    ("notyet", "certificate not yet valid"),
    ("wrongname", "no certificate principal is accepted for user carol"),
    ("elsewhere", "source address 127.0.0.1 not in the certificate's source-address 10.9.9.0/24"),
    ("forced", "certificate has a force-command, which a file gateway cannot honour"),
    ("critical", "certificate has unknown critical option 'frob@example.com'"),
    ("untrusted", "certificate signed by a CA that is not trusted"),
    ("byserial", "certificate serial 77 revoked for this CA in the KRL"),
    ("byrange", "certificate serial 1500 revoked for this CA in the KRL"),
    ("byid", "certificate key id revoked for this CA in the KRL"),
]


@pytest.mark.parametrize(("cert", "reason"), REFUSED, ids=[c for c, _ in REFUSED])
def test_refused_certificate(
    gw: RunningGateway, pki: dict[str, Path], cert: str, reason: str
) -> None:
    result = login(gw, pki, cert)
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    assert reason in reasons(gw)
    assert "Traceback" not in result.stderr


def test_principal_of_another_user_is_refused(gw: RunningGateway, pki: dict[str, Path]) -> None:
    result = login(gw, pki, "good", user="alice")
    assert result.returncode != 0
    assert "no certificate principal is accepted for user alice" in reasons(gw)


@pytest.mark.parametrize("cert", ["good", "here"])
def test_certificate_logs_in_and_is_journalled(
    gw: RunningGateway, pki: dict[str, Path], cert: str
) -> None:
    before = len(gw.recorder.of("session.start"))
    result = login(gw, pki, cert)
    assert result.returncode == 0, result.stderr
    start = gw.recorder.of("session.start")[before:][-1]
    assert start["principal"] == "carol"
    assert start["cert_principal"] == "carol-ops"
    assert start["cert_key_id"] == f"id-{cert}"
    assert start["cert_serial"] == {"good": 10, "here": 15}[cert]
    ca_fp = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{pki['ca']}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert start["cert_ca"] == ca_fp


def test_scp_with_a_certificate(gw: RunningGateway, pki: dict[str, Path], tmp_path: Path) -> None:
    source = tmp_path / "report.txt"
    source.write_text("from the field\n")
    key = pki["good"]
    result = gw.scp(
        str(source),
        ":/inbox/report.txt",
        user="carol",
        key=key,
        extra=CERT_ONLY,
    )
    assert result.returncode == 0, result.stderr
    assert (gw.area("inbox") / "report.txt").read_text() == "from the field\n"


def test_revoked_plain_key_is_refused_like_an_unknown_one(gw: RunningGateway) -> None:
    result = gw.sftp("ls /\n", user="mallory")
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    assert "key revoked (listed in the KRL)" in reasons(gw)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("dave0", "source address 127.0.0.1 not allowed by the key's from= option"),
        ("dave1", "key expired (expiry-time option)"),
        ("dave2", "key option refused: a forced command cannot be honoured by a file gateway"),
    ],
)
def test_key_options_refuse(gw: RunningGateway, key: str, reason: str) -> None:
    result = gw.sftp("ls /\n", user="dave", key=gw.keys[key])
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    assert reason in reasons(gw)


def test_rsa_certificate_from_an_ecdsa_ca(gw: RunningGateway, pki: dict[str, Path]) -> None:
    only = ("-o", "PubkeyAcceptedAlgorithms=rsa-sha2-512-cert-v01@openssh.com")
    result = gw.sftp("ls /\n", user="carol", key=pki["rsa"], extra=only)
    assert result.returncode == 0, result.stderr
    assert gw.recorder.of("session.start")[-1]["cert_key_id"] == "id-rsa"
