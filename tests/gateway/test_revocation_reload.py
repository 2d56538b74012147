"""The revocation list and the identity sources across start-up, reload and check.

A gateway does not start with a revocation list it cannot read; a reload
re-reads it, revokes the sessions it now refuses, and keeps the list in
force when the new one is unreadable; ``conduit check`` names each bad key
line by file, line and user.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from conduit.config import ConfigError, parse
from conduit.site.build import inspect
from tests.support.gateway import (
    RunningGateway,
    make_key,
    policy_text,
    start_gateway,
    stop_gateway,
)

EXTRA = """
[users.carol]
principals = ["carol-ops"]
roles = ["engineer"]

[auth]
trusted_user_ca_keys = ["{ca}.pub"]
revoked_keys = "{krl}"
"""


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, timeout=30)


def write_krl(path: Path, ca: Path, spec: str) -> None:
    spec_file = path.with_suffix(".spec")
    spec_file.write_text(spec)
    path.unlink(missing_ok=True)
    keygen("-k", "-f", str(path), "-s", f"{ca}.pub", str(spec_file))


@pytest.fixture
def site(tmp_path: Path, keys: dict[str, Path]) -> dict[str, Path]:
    ca = make_key(tmp_path, "ca")
    carol = make_key(tmp_path, "carol")
    keygen("-s", str(ca), "-I", "carol-laptop", "-z", "10", "-n", "carol-ops", f"{carol}.pub")
    krl = tmp_path / "revoked.krl"
    write_krl(krl, ca, "serial: 99\n")
    root = tmp_path / "gw"
    root.mkdir()
    policy = root / "conduit.toml"
    policy.write_text(policy_text(root, keys, EXTRA.format(ca=ca, krl=krl)))
    return {"ca": ca, "carol": carol, "krl": krl, "root": root, "policy": policy}


def started(site: dict[str, Path], keys: dict[str, Path]) -> RunningGateway:
    config = parse(site["policy"].read_text(), source=site["policy"])
    return start_gateway(config, keys, site["root"])


async def carol_session(gw: RunningGateway, site: dict[str, Path]) -> asyncssh.SSHClientConnection:
    key = asyncssh.read_private_key(site["carol"])
    cert = asyncssh.read_certificate(f"{site['carol']}-cert.pub")
    return await asyncssh.connect(
        "127.0.0.1",
        gw.port,
        username="carol",
        client_keys=[(key, cert)],
        known_hosts=str(gw.known_hosts),
        agent_path=None,
    )


def test_reload_rereads_the_krl_and_revokes_the_session(
    site: dict[str, Path], keys: dict[str, Path]
) -> None:
    gw = started(site, keys)
    try:

        async def scenario() -> tuple[object, list[str]]:
            conn = await carol_session(gw, site)
            write_krl(site["krl"], site["ca"], "serial: 10\n")
            result = await gw.gateway.reload_policy(via="test")
            await conn.wait_closed()
            refused = []
            try:
                await carol_session(gw, site)
            except asyncssh.PermissionDenied as exc:
                refused.append(str(exc))
            return result, refused

        result, refused = gw.call(scenario())
        assert result.applied
        assert result.revoked[0]["principal"] == "carol"
        assert result.revoked[0]["reason"] == (
            "login no longer allowed: certificate serial 10 revoked for this CA in the KRL"
        )
        assert refused  # and the client heard a plain refusal
        start = gw.recorder.of("session.start")[0]
        assert (start["cert_key_id"], start["cert_serial"]) == ("carol-laptop", 10)

        # an unreadable list on reload: refused, the list in force stays
        site["krl"].write_bytes(b"SSHKRL\n\0garbage")
        bad = gw.call(gw.gateway.reload_policy(via="test"))
        assert not bad.applied
        assert "revoked.krl: " in (bad.error or "")
        assert "KRL format version 1734439522 is not supported" in (bad.error or "")
        with pytest.raises(asyncssh.PermissionDenied):
            gw.call(carol_session(gw, site))
        gw.call(gw.gateway.noise.flush())
        reasons = {e["reason"] for e in gw.recorder.of("auth.failure")}
        assert "certificate serial 10 revoked for this CA in the KRL" in reasons
    finally:
        stop_gateway(gw)


def test_no_start_with_an_unreadable_krl(site: dict[str, Path], keys: dict[str, Path]) -> None:
    site["krl"].write_bytes(b"SSHKRL\n\0\0\0\0\x07")
    from conduit.gateway import Gateway

    config = parse(site["policy"].read_text(), source=site["policy"])
    with pytest.raises(ConfigError) as info:
        Gateway(config)
    assert "auth.revoked_keys" in str(info.value.problems)
    assert "KRL format version 7 is not supported" in str(info.value.problems)
    report = inspect(site["policy"])
    assert any("auth.revoked_keys" in line and "revoked.krl" in line for line in report.errors)


def test_check_names_bad_key_lines(site: dict[str, Path], tmp_path: Path) -> None:
    carol_pub = Path(f"{site['carol']}.pub").read_text().strip()
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(
        f'# carol\'s keys\n{carol_pub}\nfrom="10.0.0.0/33" {carol_pub}\ncommand="ls" {carol_pub}\n'
        f'expiry-time="20200101" {carol_pub}\n'
    )
    text = (
        site["policy"]
        .read_text()
        .replace(
            'principals = ["carol-ops"]',
            f'principals = ["carol-ops"]\nauthorized_keys = "{authorized}"\n'
            f"keys = ['expiry-time=\"2027\" {carol_pub}']",
        )
    )
    site["policy"].write_text(text)
    report = inspect(site["policy"])
    joined = "\n".join(report.lines)
    assert f"users.carol.authorized_keys: {authorized} line 3: from= pattern" in joined
    assert "users.carol.keys[0]: expiry-time '2027' is not YYYYMMDD[HHMM[SS]][Z]" in joined
    assert f"warning: users.carol.authorized_keys: {authorized} line 4: this key refuses" in joined
    assert f"{authorized} line 5: this key has expired (expiry-time)" in joined
    assert report.site is None  # errors: not served


def test_authorized_keys_file_logs_in(site: dict[str, Path], keys: dict[str, Path]) -> None:
    authorized = site["root"] / "carol_keys"
    carol_pub = Path(f"{site['carol']}.pub").read_text().strip()
    authorized.write_text(f'# the laptop\nfrom="127.0.0.0/8",no-pty {carol_pub} carol@laptop\n')
    text = (
        site["policy"]
        .read_text()
        .replace(
            'principals = ["carol-ops"]',
            f'principals = ["carol-ops"]\nauthorized_keys = "{authorized}"',
        )
    )
    site["policy"].write_text(text)
    gw = started(site, keys)
    try:
        result = gw.sftp(
            "ls /\n",
            user="carol",
            key=site["carol"],
            extra=("-o", "CertificateFile=/dev/null", "-o", "PubkeyAcceptedAlgorithms=ssh-ed25519"),
        )
        assert result.returncode == 0, result.stderr
        assert gw.recorder.of("session.start")[0]["principal"] == "carol"
    finally:
        stop_gateway(gw)


def test_identity_files_inside_an_area_are_refused(site: dict[str, Path]) -> None:
    # a user who can write the CA key or the revocation list can let anyone in
    inbox = site["root"] / "areas" / "inbox"
    inbox.mkdir(parents=True)
    moved = inbox / "revoked.krl"
    moved.write_bytes(site["krl"].read_bytes())
    text = site["policy"].read_text().replace(str(site["krl"]), str(moved))
    site["policy"].write_text(text)
    report = inspect(site["policy"])
    assert any("auth.revoked_keys" in line for line in report.errors), report.errors


def test_real_journal_holds_the_certificate_and_verifies(
    site: dict[str, Path], keys: dict[str, Path], tmp_path: Path
) -> None:
    from conduit.cli.main import main
    from tests.gateway.test_audit_trail import journal_records

    # a key id with an escape sequence: the CA signs what it is given
    hostile = make_key(tmp_path, "hostile")
    keygen(
        "-s",
        str(site["ca"]),
        "-I",
        "evil\x1b[2Jid",
        "-z",
        "99",
        "-n",
        "carol-ops",
        f"{hostile}.pub",
    )
    policy = site["policy"]
    policy.write_text(policy.read_text() + f'\n[audit]\njournal = "{site["root"]}/audit"\n')
    config = parse(policy.read_text(), source=policy)
    gw = start_gateway(config, keys, site["root"], recorder="journal")
    try:
        only = ("-o", "PubkeyAcceptedAlgorithms=ssh-ed25519-cert-v01@openssh.com")
        ok = gw.sftp("ls /\n", user="carol", key=site["carol"], extra=only)
        assert ok.returncode == 0, ok.stderr
        refused = gw.sftp("ls /\n", user="carol", key=hostile, extra=only)  # serial 99: revoked
        assert refused.returncode != 0
        gw.call(gw.gateway.noise.flush())
    finally:
        stop_gateway(gw)
    records = journal_records(site["root"] / "audit")
    start = next(r for r in records if r["type"] == "session.start")
    assert (start["cert_key_id"], start["cert_serial"], start["cert_principal"]) == (
        "carol-laptop",
        10,
        "carol-ops",
    )
    failure = next(r for r in records if r["type"] == "auth.failure")
    assert failure["reason"] == "certificate serial 99 revoked for this CA in the KRL"
    assert failure["cert_key_id"] == "evil\x1b[2Jid"  # kept as sent; escaped when shown
    assert main(["audit", "verify", "--config", str(policy)]) == 0


def test_check_shows_how_each_user_logs_in(
    site: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from conduit.cli.main import main

    assert main(["check", "--config", str(site["policy"])]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "certs: carol-ops" in out
