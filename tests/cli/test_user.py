"""``conduit user totp NAME``: enrolment, journalled, and codes that stay spent.

Hostile cases first: an unknown (or hostile) user name is refused in one
escaped line and nothing is created. Then enrolment with no gateway running
(the command writes the journal itself) and through a running ``conduit
serve`` (which journals it for the command), a login with the code through
real OpenSSH ``sftp``, and the same code refused after the gateway restarts.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyotp

from conduit.auth.secrets import KEY_FILE, SecretStore
from tests.support import askpass
from tests.support.gateway import conduit_env, policy_text, serve_process

URI = re.compile(r"otpauth://totp/Conduit:alice%40gw1\?secret=([A-Z2-7]{32})&issuer=Conduit")


def conduit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env=conduit_env(),
        timeout=timeout,
    )


def site(root: Path, keys: dict[str, Path]) -> Path:
    config = root / "conduit.toml"
    text = policy_text(root, keys, '\n[auth.second_factor]\ntotp_users = ["alice"]\n')
    config.write_text(text.replace("[gateway]\n", '[gateway]\nnode = "gw1"\n', 1))
    for area in ("inbox", "outbox", "inbox-archive"):
        (root / "areas" / area).mkdir(parents=True, exist_ok=True)
    return config


def journal(root: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted((root / "data" / "audit").glob("journal-*.jsonl"))
        for line in path.read_text().splitlines()
        if line
    ]


def journal_text(root: Path) -> str:
    return "".join(p.read_text() for p in (root / "data" / "audit").glob("journal-*.jsonl"))


def test_an_unknown_user_is_refused_in_one_line(tmp_path: Path, keys: dict[str, Path]) -> None:
    config = site(tmp_path, keys)
    for name in ("mallory", "al\x1b[31mice"):
        result = conduit("user", "totp", name, "--config", str(config))
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("conduit: unknown user")
        assert "\x1b" not in result.stderr and "Traceback" not in result.stderr
        assert "otpauth" not in result.stdout
    assert not (tmp_path / "data" / KEY_FILE).exists()
    assert not list((tmp_path / "data").glob("audit/journal-*"))


def test_enrolment_prints_the_uri_and_a_qr_code_and_is_journalled(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    config = site(tmp_path, keys)
    first = conduit("user", "totp", "alice", "--config", str(config))
    assert first.returncode == 0, first.stderr
    match = URI.search(first.stdout)
    assert match, first.stdout
    secret = match.group(1)
    assert "▀" in first.stdout or "▄" in first.stdout  # the QR code, in half blocks
    data = tmp_path / "data"
    assert stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "state.sqlite").stat().st_mode) == 0o600
    store = SecretStore.open(data)
    assert store.secret("alice") == secret
    store.close()
    assert secret.encode() not in (data / "state.sqlite").read_bytes()

    again = conduit("user", "totp", "alice", "--config", str(config))
    assert again.returncode == 0 and "replaced" in again.stdout
    second = URI.search(again.stdout)
    assert second and second.group(1) != secret

    records = [r for r in journal(tmp_path) if r["type"] == "auth.totp_enrol"]
    assert [(r["principal"], r["replaced"]) for r in records] == [
        ("alice", False),
        ("alice", True),
    ]
    assert secret not in journal_text(tmp_path) and second.group(1) not in journal_text(tmp_path)
    verify = conduit("audit", "verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_codes_stay_spent_across_a_gateway_restart(tmp_path: Path, keys: dict[str, Path]) -> None:
    config = site(tmp_path, keys)
    process, port, known = serve_process(config)
    try:
        # the gateway holds the journal: it writes the enrolment record
        enrol = conduit("user", "totp", "alice", "--config", str(config))
        assert enrol.returncode == 0, enrol.stderr
        match = URI.search(enrol.stdout)
        assert match
        code = pyotp.TOTP(match.group(1)).now()

        def sftp(port: int, known: Path) -> subprocess.CompletedProcess[str]:
            env = askpass.answering(tmp_path / "askpass", code)
            options = askpass.options(known, keys["alice"])
            return subprocess.run(
                ["sftp", "-P", str(port), *options, "-b", "-", "alice@127.0.0.1"],
                input="ls /inbox\n",
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                start_new_session=True,
            )

        assert sftp(port, known).returncode == 0
    finally:
        process.terminate()
        process.wait(15)

    process, port, known = serve_process(config)
    try:
        replay = sftp(port, known)
        assert replay.returncode != 0 and "Permission denied" in replay.stderr
    finally:
        process.terminate()
        process.wait(15)

    records = journal(tmp_path)
    enrolled = [r for r in records if r["type"] == "auth.totp_enrol"]
    assert len(enrolled) == 1 and enrolled[0]["principal"] == "alice"
    logins = [r for r in records if r["type"] == "session.start"]
    assert [r["factors"] for r in logins] == [["publickey", "totp"]]
    reasons = [r.get("reason") for r in records if r["type"] == "auth.failure"]
    assert reasons == ["TOTP code already used"]
    assert code not in {str(v) for r in records for v in r.values()}
    verify = conduit("audit", "verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
