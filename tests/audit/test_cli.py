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
