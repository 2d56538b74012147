import argparse
import csv
import io
import json
from pathlib import Path

import pytest

from conduit.audit.journal import journal_files
from conduit.cli import audit as audit_cli
from conduit.cli.main import CommandError

SHA = "ab" * 32


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    audit_cli.register(parser.add_subparsers())
    args = parser.parse_args(["audit", *argv])
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"conduit: {exc}")
        return exc.code


@pytest.fixture
async def journal(make_auditor, tmp_path) -> Path:
    auditor = await make_auditor(rotate_size=4000)
    await auditor.record(
        "session.start", "success", principal="alice", source="10.10.0.5", protocol="sftp"
    )
    for i in range(20):
        await auditor.record(
            "file.upload",
            "success",
            principal="alice",
            path=f"/fw/{i}.bin",
            bytes=i,
            sha256=SHA if i == 7 else "cd" * 32,
            area="firmware",
        )
    await auditor.record(
        "auth.failure", "denied", user_given="=cmd|' /C calc'!A0\x1b[31m", reason="unknown user"
    )
    await auditor.close()
    return tmp_path / "audit"


def test_verify_ok_and_fault(journal, tmp_path, capsys):
    assert run(["verify", "--journal", str(journal)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK:") and "signed by SHA256:" in out
    path = journal_files(journal)[0]
    path.write_bytes(path.read_bytes().replace(b"/fw/3.bin", b"/fw/X.bin"))
    assert run(["verify", "--journal", str(journal)]) == 1
    out = capsys.readouterr().out
    assert "FAULT altered: record seq 6" in out  # seq 1 is the start checkpoint


def test_verify_with_config(journal, tmp_path, capsys):
    config = tmp_path / "conduit.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n[audit]\njournal = "{journal}"\n')
    assert run(["verify", "--config", str(config)]) == 0
    assert run(["verify", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().out


def test_verify_from_file(journal, capsys):
    second = journal_files(journal)[1]
    assert run(["verify", "--journal", str(journal), "--from", second.name]) == 0


def test_tail_escapes_terminal_controls(journal, capsys):
    assert run(["tail", "--journal", str(journal), "-n", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "\x1b" not in "".join(out) and "\\x1b[31m" in out[1]


def test_search(journal, capsys):
    assert run(["search", "--journal", str(journal), "--sha256", SHA, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["path"] for x in lines] == ["/fw/7.bin"]
    assert run(["search", "--journal", str(journal), "--path", "/fw/1*.bin", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 11
    assert (
        run(
            [
                "search",
                "--journal",
                str(journal),
                "--user",
                "alice",
                "--type",
                "session.*",
                "--json",
            ]
        )
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert run(["search", "--journal", str(journal), "--outcome", "denied"]) == 0
    table = capsys.readouterr().out
    assert "auth.failure" in table and "\x1b" not in table and "1 event(s)" in table
    assert (
        run(
            [
                "search",
                "--journal",
                str(journal),
                "--since",
                "1h",
                "--until",
                "2999-01-01",
                "--json",
            ]
        )
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) > 20
    assert run(["search", "--journal", str(journal), "--since", "yesterday-ish"]) == 2


def test_export_csv_and_jsonl(journal, tmp_path, capsys):
    out = tmp_path / "export.csv"
    assert run(["export", "--journal", str(journal), "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows[0]["type"] == "audit.checkpoint" and rows[0]["reason"] == "start"
    rows = rows[1:]
    assert rows[0]["type"] == "session.start" and rows[0]["source"] == "10.10.0.5"
    denied = next(r for r in rows if r["type"] == "auth.failure")
    assert denied["user_given"].startswith("'=")  # no formula injection
    assert (
        run(["export", "--journal", str(journal), "--format", "jsonl", "--type", "file.upload"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20
    raw = b"".join(p.read_bytes() for p in journal_files(journal))
    assert all(line.encode() in raw for line in lines)  # exact journal lines


def test_missing_journal_is_a_clear_error(tmp_path, capsys):
    assert run(["verify", "--journal", str(tmp_path / "nope")]) == 2
    assert "no such journal folder" in capsys.readouterr().out


TROJAN = "invoice\u202etxt.exe"  # shows as "invoiceexe.txt"


@pytest.fixture
async def hostile_journal(make_auditor, tmp_path) -> Path:
    auditor = await make_auditor()
    await auditor.record(
        "file.upload",
        "denied",
        principal="mallory",
        path=f"/inbox/{TROJAN}",
        reason="lrm\u200e isolate\u2066 c1\x9b31m bell\x07 cr\r",
    )
    await auditor.close()
    return tmp_path / "audit"


def _no_raw_controls(text: str) -> None:
    from conduit.names import has_controls

    assert not has_controls(text.replace("\n", "")), repr(text)


def test_tail_search_and_csv_escape_bidi_and_c1(hostile_journal, tmp_path, capsys):
    assert run(["tail", "--journal", str(hostile_journal), "-n", "5"]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "invoice\\u202etxt.exe" in out and "\\u200e" in out and "\\x9b31m" in out
    assert run(["search", "--journal", str(hostile_journal), "--user", "mallory"]) == 0
    table = capsys.readouterr().out
    _no_raw_controls(table)
    assert "\\u202e" in table.replace("\n", "").replace(" ", "")
    out_csv = tmp_path / "e.csv"
    run(["export", "--journal", str(hostile_journal), "--format", "csv", "-o", str(out_csv)])
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text(), newline="")))[1:]
    _no_raw_controls(out_csv.read_text())
    assert rows[0]["path"] == "/inbox/invoice\\u202etxt.exe"
    # --json / jsonl stay the exact journal lines (ASCII JSON escapes)
    assert run(["search", "--journal", str(hostile_journal), "--user", "mallory", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == f"/inbox/{TROJAN}"


def test_search_by_sha256_prefix(journal, capsys):
    """The table shows 16 hex digits: that (or any 8+ digits) must find the file again."""
    for prefix in (SHA[:16], SHA[:8], SHA[:8].upper(), f"  {SHA[:12]} "):
        assert run(["search", "--journal", str(journal), "--sha256", prefix, "--json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(x)["path"] for x in lines] == ["/fw/7.bin"], prefix
    assert run(["search", "--journal", str(journal), "--sha256", "cd" * 4, "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 19


@pytest.mark.parametrize("bad", ["abababa", "", "abababag", "ababab*a", "abab?bab", "ab" * 33])
def test_search_refuses_short_or_non_hex_sha256(journal, capsys, bad):
    assert run(["search", "--journal", str(journal), "--sha256", bad]) == 2
    out = capsys.readouterr().out
    assert "--sha256" in out and "first 8 digits" in out and "event(s)" not in out


async def test_search_says_when_a_prefix_matches_several_files(make_auditor, tmp_path, capsys):
    auditor = await make_auditor()
    for digest in ("12345678" + "a" * 56, "12345678" + "b" * 56, "12345679" + "c" * 56):
        await auditor.record("file.upload", "success", principal="alice", sha256=digest)
    await auditor.close()
    assert run(["search", "--journal", str(tmp_path / "audit"), "--sha256", "12345678"]) == 0
    out = capsys.readouterr().out
    assert "2 event(s)" in out and "2 different files" in out
    assert run(["search", "--journal", str(tmp_path / "audit"), "--sha256", "12345679"]) == 0
    out = capsys.readouterr().out
    assert "1 event(s)" in out and "different files" not in out


async def test_tail_shows_bytes_sha256_and_a_renames_old_name(make_auditor, tmp_path, capsys):
    auditor = await make_auditor()
    await auditor.record(
        "file.upload", "success", principal="alice", path="/inbox/a.bin", bytes=1234, sha256=SHA
    )
    await auditor.record(
        "file.rename",
        "success",
        principal="alice",
        path="/inbox/b\x1b.bin",
        old_path="/inbox/a.bin",
        new_path="/inbox/b\x1b.bin",
    )
    await auditor.close()
    assert run(["tail", "--journal", str(tmp_path / "audit"), "-n", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (upload,) = [x for x in lines if " file.upload " in x]
    (rename,) = [x for x in lines if " file.rename " in x]
    assert "/inbox/a.bin bytes=1234 " in upload and f"sha256={SHA}" in upload
    assert "file.rename success alice - /inbox/a.bin -> /inbox/b\\x1b.bin" in rename
    assert "bytes=" not in rename and "sha256=" not in rename
    assert run(["search", "--journal", str(tmp_path / "audit"), "--type", "file.rename"]) == 0
    table = "".join(capsys.readouterr().out.split())  # the table folds long cells
    assert "/inbox/a.bin->/inbox/b\\x1b.bin" in table and "\x1b" not in table


@pytest.mark.parametrize(
    ("action", "described", "defaults"),
    [
        ("verify", "hash chain", ["(default: conduit.toml)", "(default: audit_ed25519.pub"]),
        ("tail", "one line each", ["(default: conduit.toml)", "(default: 10)"]),
        ("search", "prefix of at least 8", ["(default: conduit.toml)", "(default: 1000"]),
        ("export", "JSON Lines", ["(default: conduit.toml)", "(default: jsonl)", "stdout"]),
    ],
)
def test_every_audit_action_has_a_description_and_shows_defaults(
    capsys, action, described, defaults
):
    with pytest.raises(SystemExit) as exit_:
        run([action, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal width
    usage, _, rest = text.partition("options:")
    assert described in usage  # the description, between the usage line and the options
    for default in defaults:
        assert default in rest, default
    assert "(default: None)" not in rest and "(default: False)" not in rest


def test_audit_group_help_has_a_description(capsys):
    from conduit.cli.main import main

    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    assert "DATA_DIR/audit" in " ".join(capsys.readouterr().out.split())
