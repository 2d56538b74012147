"""Write-ahead: no effect on storage without its durable record, over real clients.

Every effect (upload commit, delete, rename, mkdir, rmdir, set times) writes
an ``intent`` record before it happens and an outcome after. These tests break
the journal before an effect (it must not happen), and kill -9 a real
``conduit serve`` between intent and effect and between effect and outcome
(``CONDUIT_HOLD_AT``), then restart it and check that the journal and the
storage agree, nothing live is called failed, and ``audit verify`` passes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conduit.cli.main import main
from tests.gateway.test_audit_trail import audited_policy, journal_records, recorded
from tests.support.gateway import (
    random_file,
    scp_argv,
    serve_process,
    sftp_argv,
    sha256,
    wait_for,
)


def outcomes_of(records: list[dict[str, Any]], intent: dict[str, Any]) -> list[dict[str, Any]]:
    """The records that end the transfer or effect ``intent`` announced."""
    key = intent.get("transfer") or intent["intent"]
    return [
        r
        for r in records
        if (r.get("transfer") == key or r.get("intent") == key)
        and r["type"] in (intent["type"], "audit.alert")
        and r["outcome"] in ("success", "failed")
    ]


def test_each_effect_is_announced_durably_before_it_happens(
    make_gateway, keys: dict[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    gw = make_gateway(text=audited_policy(root, keys, ""), recorder="journal")
    src = random_file(tmp_path / "a.bin", 5000)
    batch = (
        "mkdir /inbox/d\n"
        f"put -p {src} /inbox/d/a.bin\n"
        "rename /inbox/d/a.bin /inbox/d/b.bin\n"
        f"get /inbox/d/b.bin {tmp_path / 'back.bin'}\n"
        "rm /inbox/d/b.bin\n"
        "rmdir /inbox/d\n"
    )
    result = gw.sftp(batch)
    assert result.returncode == 0, result.stderr
    records = journal_records(root / "audit")
    intents = [r for r in records if r["outcome"] == "intent"]
    kinds = [r["type"] for r in intents]
    assert kinds == [
        "dir.create",
        "file.upload",
        "file.rename",
        "file.delete",
        "dir.delete",
    ], kinds
    upload = intents[1]
    assert upload["sha256"] == sha256(src) and upload["bytes"] == 5000
    assert upload["principal"] == "alice" and upload["path"] == "/inbox/d/a.bin"
    # put -p: the commit intent names the times, so setting them needs no second intent
    assert upload["mtime"] == int(src.stat().st_mtime)
    times = [r for r in records if r["type"] == "file.times"]
    assert [r["outcome"] for r in times] == ["success"]
    assert times[0]["intent"] == upload["transfer"]
    for intent in intents:
        ends = outcomes_of(records, intent)
        assert [r["outcome"] for r in ends] == ["success"], intent
        assert ends[0]["seq"] > intent["seq"]
    read = [r for r in records if r["type"] == "file.download"]
    assert [r["outcome"] for r in read] == ["started", "success"]
    (root / "conduit.toml").write_text(audited_policy(root, keys, ""))
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


def test_a_standalone_setstat_is_announced_and_journalled(
    make_gateway, keys: dict[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    gw = make_gateway(text=audited_policy(root, keys, ""), recorder="journal")
    random_file(gw.area("inbox") / "t.bin", 10)

    async def scenario() -> None:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            await sftp.utime("/inbox/t.bin", (1_000_000, 2_000_000))

    gw.call(scenario())
    assert int((gw.area("inbox") / "t.bin").stat().st_mtime) == 2_000_000
    records = [r for r in journal_records(root / "audit") if r["type"] == "file.times"]
    assert [r["outcome"] for r in records] == ["intent", "success"]
    assert records[0]["mtime"] == 2_000_000 and records[0]["path"] == "/inbox/t.bin"


OPS = {
    "remove": lambda s: s.remove("/inbox/keep.bin"),
    "rename": lambda s: s.rename("/inbox/keep.bin", "/inbox/moved.bin"),
    "rmdir": lambda s: s.rmdir("/inbox/folder"),
    "mkdir": lambda s: s.mkdir("/inbox/new"),
    "setstat": lambda s: s.utime("/inbox/keep.bin", (1, 1)),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_no_effect_when_the_intent_cannot_be_written(
    make_gateway, keys: dict[str, Path], tmp_path: Path, op: str
) -> None:  # type: ignore[no-untyped-def]
    """Closed mode: the journal's folder goes away under an open session; the
    change is refused with the reason and storage is untouched."""
    import asyncssh

    root = tmp_path / "site"
    root.mkdir()
    gw = make_gateway(text=audited_policy(root, keys, 'on_failure = "closed"'), recorder="journal")
    inbox = gw.area("inbox")
    random_file(inbox / "keep.bin", 100)
    (inbox / "folder").mkdir()
    before = sorted((p.name, p.stat().st_mtime) for p in inbox.iterdir())

    async def scenario() -> str:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            await recorded(root / "audit", "session.start")  # see recorded()
            shutil.move(root / "audit", root / "audit-gone")
            (root / "audit").write_text("not a folder")
            try:
                await OPS[op](sftp)
            except asyncssh.SFTPError as exc:
                return str(exc.reason)
            return "done"

    reason = gw.call(scenario())
    assert "audit journal unavailable" in reason
    assert sorted((p.name, p.stat().st_mtime) for p in inbox.iterdir()) == before
    assert not [r for r in journal_records(root / "audit-gone") if r["outcome"] == "intent"]


# -- kill -9 at each step, real clients ------------------------------------------------

# (client, operation): what to run, and how storage looks if the effect happened
CASES = ["scp", "scp-O", "sftp-put", "delete", "rename", "mkdir", "rmdir"]


def _client(case: str, port: int, known: Path, key: Path, src: Path) -> subprocess.Popen[str]:
    if case in ("scp", "scp-O"):
        argv = scp_argv(port, known, key, *(["-O"] if case == "scp-O" else []))
        argv += [str(src), "alice@127.0.0.1:/inbox/up.bin"]
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    command = {
        "sftp-put": f"put {src} /inbox/up.bin",
        "delete": "rm /inbox/keep.bin",
        "rename": "rename /inbox/keep.bin /inbox/moved.bin",
        "mkdir": "mkdir /inbox/new",
        "rmdir": "rmdir /inbox/folder",
    }[case]
    process = subprocess.Popen(
        sftp_argv(port, known, key),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(command + "\n")
    process.stdin.close()
    return process


TYPE_OF = {
    "scp": "file.upload",
    "scp-O": "file.upload",
    "sftp-put": "file.upload",
    "delete": "file.delete",
    "rename": "file.rename",
    "mkdir": "dir.create",
    "rmdir": "dir.delete",
}


def _happened(case: str, inbox: Path, src: Path) -> bool:
    if case in ("scp", "scp-O", "sftp-put"):
        return (inbox / "up.bin").exists() and sha256(inbox / "up.bin") == sha256(src)
    return {
        "delete": not (inbox / "keep.bin").exists(),
        "rename": (inbox / "moved.bin").exists() and not (inbox / "keep.bin").exists(),
        "mkdir": (inbox / "new").is_dir(),
        "rmdir": not (inbox / "folder").exists(),
    }[case]


@pytest.mark.parametrize("step", ["after-intent", "after-effect"])
@pytest.mark.parametrize("case", CASES)
def test_killed_between_steps_the_journal_and_storage_agree(
    keys: dict[str, Path], tmp_path: Path, case: str, step: str
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    config = root / "conduit.toml"
    config.write_text(audited_policy(root, keys, ""))
    inbox = root / "areas" / "inbox"
    inbox.mkdir(parents=True)
    random_file(inbox / "keep.bin", 300)
    (inbox / "folder").mkdir()
    src = random_file(tmp_path / "src.bin", 200_000)
    held = tmp_path / "held"
    type_ = TYPE_OF[case]
    gateway, port, known = serve_process(
        config, env={"CONDUIT_HOLD_AT": f"{step}:{type_}", "CONDUIT_HOLD_FILE": str(held)}
    )
    client = _client(case, port, known, keys["alice"], src)
    try:
        assert wait_for(lambda: held.exists() and held.read_text(), timeout=20), "never held"
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
    finally:
        client.kill()
        client.wait(10)
    assert _happened(case, inbox, src) == (step == "after-effect")
    restarted, _, _ = serve_process(config)  # recovery settles the intent
    if type_ == "file.upload" and step == "after-intent":  # the temp file's sweep
        assert wait_for(
            lambda: any(r["type"] == "storage.sweep" for r in journal_records(root / "audit"))
        )
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(15) == 0
    records = journal_records(root / "audit")
    intents = [r for r in records if r["outcome"] == "intent" and r["type"] == type_]
    assert len(intents) == 1, intents
    ends = outcomes_of(records, intents[0])
    want = "success" if step == "after-effect" else "failed"
    assert [(r["type"], r["outcome"]) for r in ends] == [(type_, want)], ends
    assert ends[0]["note"].startswith("settled at recovery")
    assert ends[0]["principal"] == "alice"
    # the journal agrees with the storage, which recovery did not touch
    assert _happened(case, inbox, src) == (want == "success")
    # the interrupted session got its end
    session = intents[0]["session"]
    assert [
        r["outcome"] for r in records if r["type"] == "session.end" and r["session"] == session
    ] == ["failed"]
    if type_ == "file.upload":
        assert not [p for p in inbox.iterdir() if p.name.startswith(".conduit-part-")]
        if step == "after-intent":
            sweeps = [r for r in records if r["type"] == "storage.sweep"]
            assert sweeps and sweeps[0]["count"] == 1 and sweeps[0]["area"] == "inbox"
    assert main(["audit", "verify", "--config", str(config)]) == 0


def test_a_gateway_writes_its_anchor_folder_and_verify_uses_it(
    make_gateway, keys: dict[str, Path], tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """[audit] anchor_dirs from the config: cutting the tail and putting back an
    earlier genuine checkpoint.json fails verify with the missing records named."""
    import json

    from conduit.audit.events import digest, encode

    root = tmp_path / "site"
    root.mkdir()
    (tmp_path / "anchor").mkdir()
    text = audited_policy(root, keys, f'anchor_dirs = ["{tmp_path / "anchor"}"]')
    (root / "conduit.toml").write_text(text)
    gw = make_gateway(text=text, recorder="journal")
    src = random_file(tmp_path / "a.bin", 1000)
    assert gw.scp(str(src), ":/inbox/", legacy=True).returncode == 0
    journal = root / "audit"
    first = next(r for r in journal_records(journal) if r["type"] == "audit.checkpoint")
    gw.call(gw.gateway.stop())
    anchored = json.loads((tmp_path / "anchor" / "checkpoint.json").read_text())
    assert anchored == json.loads((journal / "checkpoint.json").read_text())
    config = str(root / "conduit.toml")
    assert main(["audit", "verify", "--config", config]) == 0
    assert f"reaches anchor {tmp_path / 'anchor'}" in capsys.readouterr().out
    # root on the gateway: cut after the first checkpoint, restore its state
    for path in sorted(journal.glob("journal-*.jsonl")):
        kept = [
            ln for ln in path.read_text().splitlines(True) if json.loads(ln)["seq"] <= first["seq"]
        ]
        path.write_text("".join(kept))
    state = {"file": "x", "seq": first["seq"], "hash": digest(encode(first)), "record": first}
    (journal / "checkpoint.json").write_text(json.dumps(state))
    assert main(["audit", "verify", "--journal", str(journal)]) == 0  # the folder alone: fooled
    capsys.readouterr()
    assert main(["audit", "verify", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "FAULT truncated" in out and f"ends at seq {first['seq']}" in out
    assert f"seq {first['seq'] + 1}..{anchored['seq']} are missing from the end" in out
