"""``conduit check``, ``explain`` and ``reload``: output and exit codes (in-process and not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.config.site import usable_copy
from tests.policy.conftest import EXAMPLE

SRC = Path(__file__).resolve().parents[2] / "src"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_good_file_prints_tables_and_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = usable_copy(EXAMPLE, tmp_path)
    code, out, _ = run(capsys, "check", "--config", str(site))
    assert code == 0, out
    assert f"{site}: OK" in out
    for title in ("Zones", "Areas", "Devices", "Roles", "Users", "Conduits", "Flows"):
        assert title in out
    assert "firmware-down" in out and "devices/plc-*" in out and "/devices/plc-01" in out
    assert "an address in no zone is denied" in out
    assert "10.10.0.0/16 (enterprise)" in out


def test_check_bad_file_exits_1_with_precise_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = usable_copy(EXAMPLE, tmp_path)
    bad.write_text(
        bad.read_text()
        .replace('roles = ["engineer"]', 'roles = ["enginer"]')
        .replace('to = "dmz"', 'to = "enterprise"')
    )
    code, out, _ = run(capsys, "check", "--config", str(bad))
    assert code == 1
    assert f"{bad}: line 70: users.alice.roles: unknown role 'enginer'" in out
    assert f"{bad}: line 82: conduits[0].to: from and to are both 'enterprise'" in out
    assert "2 errors; the policy is not usable" in out
    assert "Zones" not in out


def test_check_unknown_key_and_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "conduit.toml"
    bad.write_text('[zones.a]\nlevel = 1\nnetwork = ["10.0.0.0/8"]\n')
    code, out, _ = run(capsys, "check", "--config", str(bad))
    assert code == 1
    assert "line 3: zones.a.network: unknown key" in out
    code, out, _ = run(capsys, "check", "--config", str(tmp_path / "missing.toml"))
    assert code == 1 and "no such file" in out


def test_check_defaults_to_conduit_toml_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    usable_copy(EXAMPLE, tmp_path).rename(tmp_path / "conduit.toml")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "check")
    assert code == 0 and "conduit.toml: OK" in out


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (
            [
                "alice",
                "write",
                "/firmware/fw.bin",
                "--from",
                "10.10.1.1",
                "--at",
                "2026-11-28T03:00",
                "--size",
                "1MiB",
            ],
            0,
            [
                # Allowed into quarantine: it commits once signed and approved.
                # No trust set is named, so explain warns that no signature
                # can pass (the quarantine refuses the file).
                "ALLOW",
                "ok  who may do what where: roles.engineer.grants[0]",
                "rule:        conduits[firmware-down]",
                "obligations: approval, signature",
                "from trust (none: refused)",
                "client sees: allowed into quarantine: under its name only once approval,"
                " signature are met",
            ],
        ),
        (
            [
                "alice",
                "write",
                "/firmware/fw.bin",
                "--from",
                "10.10.1.1",
                "--at",
                "2026-11-26T12:00+01:00",
            ],
            1,
            [
                "DENY",
                "outside the window of firmware-down",
                "NO  may data flow",
                "Sat 02:00-06:00, Mon-Fri 22:00-05:00 (Europe/Berlin)",
            ],
        ),
        (
            ["alice", "read", "logs/a.txt", "--from", "10.10.1.1"],
            1,
            ["DENY", "conduits[logs-up] paths", "ok  who may do what where"],
        ),
        (
            ["alice", "write", "/firmware/fw.bin", "--from", "192.168.0.9"],
            1,
            [
                "DENY",
                "rule:        deny:hidden",
                "no conduit between control and dmz in either direction",
                "client sees: no such file or directory",
            ],
        ),
        (
            ["carol", "write", "/logs/x.log", "--from", "10.20.0.1"],
            1,
            ["DENY", "NO  who may do what where: no role of carol grants write on area logs"],
        ),
        (
            ["alice", "list", "/", "--from", "203.0.113.9"],
            1,
            ["DENY", "203.0.113.9 is in no zone"],
        ),
        (
            ["alice", "READ", "/logs/a.log", "--from", "10.20.0.1"],
            0,
            ["ALLOW", "same zone dmz: no conduit needed", "conduit:     -"],
        ),
    ],
)
def test_explain(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, words: list[str]
) -> None:
    got, out, err = run(capsys, "explain", *argv, "--config", str(EXAMPLE))
    assert got == code, out + err
    for word in words:
        assert word in out, f"{word!r} not in:\n{out}"


def test_explain_rename_shows_both_halves(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bob", "rename", "/drop/reports/a.csv", "/drop/reports/b.csv", "--from", "10.10.5.3"]
    code, out, _ = run(capsys, "explain", *argv, "--size", "10", "--config", str(EXAMPLE))
    assert code == 0, out
    assert "ALLOW bob rename /drop/reports/a.csv -> /drop/reports/b.csv (10 bytes)" in out
    for half in ("rename the old name:", "read the old name:", "write the new name:"):
        assert half in out
    assert "replace what the new name holds" not in out
    # Replacing an existing file needs delete on it; bob has it, alice has no grant at all.
    code, out, _ = run(capsys, "explain", *argv, "--replaces", "--config", str(EXAMPLE))
    assert code == 0 and "replace what the new name holds:" in out
    argv = ["alice", "rename", "/firmware/a.img", "/firmware/a.bin", "--from", "10.20.0.1"]
    code, out, _ = run(capsys, "explain", *argv, "--config", str(EXAMPLE))
    assert code == 1 and "client sees: rename not granted (rename the old name)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["alice", "copy", "/x", "--from", "10.0.0.1"], "unknown operation 'copy'"),
        (["alice", "read", "/x", "--from", "nowhere"], "not an IP address"),
        (["alice", "read", "/x", "--from", "10.0.0.1", "--size", "big"], "--size"),
        (["alice", "read", "/x", "--from", "10.0.0.1", "--at", "soon"], "--at"),
        (["alice", "read", "/x", "/y", "--from", "10.0.0.1"], "only for rename"),
        (["alice", "rename", "/x", "--from", "10.0.0.1", "--replaces"], "give OLD and NEW"),
    ],
)
def test_explain_user_mistakes(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "explain", *argv, "--config", str(EXAMPLE))
    assert code == 2 and message in err and "Traceback" not in err


def _config_with_data_dir(tmp_path: Path, text: str | None = None) -> Path:
    config = usable_copy(EXAMPLE, tmp_path).rename(tmp_path / "conduit.toml")
    if text is not None:
        config.write_text(text)
    (tmp_path / "data").mkdir(exist_ok=True)
    return config


def test_reload_refuses_a_bad_file_without_signalling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_with_data_dir(tmp_path, EXAMPLE.read_text().replace('"dmz"', '"dmx"', 1))
    (tmp_path / "data" / "gateway.pid").write_text("999999999\n")
    code, out, _ = run(capsys, "reload", "--config", str(config))
    assert code == 1
    assert "unknown zone 'dmx'" in out and "keeps its current policy" in out


def test_reload_without_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    config = _config_with_data_dir(tmp_path)
    code, _, err = run(capsys, "reload", "--config", str(config))
    assert code == 1 and "no gateway runs" in err and "control.sock" in err
    # A socket left by a gateway that died: nobody answers on it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(tmp_path / "data" / "control.sock"))
    code, out, err = run(capsys, "reload", "--config", str(config))
    assert code == 1 and "no gateway runs" in err and "reloaded" not in out


def test_as_a_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    site = usable_copy(EXAMPLE, tmp_path)
    ok = subprocess.run(
        [sys.executable, "-m", "conduit", "check", "--config", str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "Flows" in ok.stdout
    deny = subprocess.run(
        [
            sys.executable,
            "-m",
            "conduit",
            "explain",
            "alice",
            "delete",
            "/firmware/a.bin",
            "--from",
            "10.20.0.1",
            "--config",
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert deny.returncode == 1
    assert "DENY" in deny.stdout and "Traceback" not in deny.stderr


def test_explain_approve_needs_no_address(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``approve`` is decided on the host: ``--from`` may be left out (and only there)."""
    from conduit.cli.main import main

    config = tmp_path / "conduit.toml"
    config.write_text(
        '[zones.z]\nlevel = 1\nnetworks = ["10.0.0.0/8"]\n'
        f'[areas.fw]\nzone = "z"\npath = "{tmp_path}/fw"\n'
        '[roles.r]\ngrants = [{ target = "fw", ops = ["approve"], paths = ["*.bin"] }]\n'
        '[users.bob]\nroles = ["r"]\nkeys = ["ssh-ed25519 '
        'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]\n'
    )
    assert main(["explain", "bob", "approve", "/fw/a.bin", "--config", str(config)]) == 0
    assert "ALLOW bob approve /fw/a.bin" in capsys.readouterr().out
    assert main(["explain", "bob", "approve", "/fw/a.img", "--config", str(config)]) == 1
    assert main(["explain", "bob", "write", "/fw/a.bin", "--config", str(config)]) == 2
    assert "--from IP is required" in capsys.readouterr().err
