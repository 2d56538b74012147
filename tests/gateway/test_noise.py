"""Unauthenticated clients cannot grow the journal at will (real journal, real verify)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncssh
import pytest

from conduit.cli.main import main
from tests.gateway.test_audit_trail import audited_policy, journal_records
from tests.support.gateway import RunningGateway, random_file, wait_for

LONG_USER = "u" * 1000  # 1 KB user names, as the attack used


def site(make_gateway, keys: dict[str, Path], tmp_path: Path, limits: str = "") -> RunningGateway:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    text = audited_policy(root, keys, "").replace(
        "[gateway.limits]\n", f"[gateway.limits]\n{limits}\n"
    )
    (root / "conduit.toml").write_text(text)
    return make_gateway(text=text, recorder="journal")  # type: ignore[no-any-return]


async def unknown_keys(port: int, known_hosts: Path, connections: int, keys: int) -> None:
    """``connections`` clients (5 at a time) offering ``keys`` unknown keys each."""
    wrong = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(keys)]

    async def one() -> None:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                port,
                username=LONG_USER,
                client_keys=wrong,
                known_hosts=str(known_hosts),
                agent_path=None,
            ):
                pass
        except (asyncssh.Error, OSError):
            pass

    for _ in range(connections // 5):
        await asyncio.gather(*(one() for _ in range(5)))


def test_failed_logins_are_summarised_and_capped(make_gateway, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw = site(make_gateway, keys, tmp_path)
    root = tmp_path / "site"
    gw.call(unknown_keys(gw.port, gw.known_hosts, 30, 4), timeout=120)
    gw.call(gw.gateway.noise.flush())
    failures = [r for r in journal_records(root / "audit") if r["type"] == "auth.failure"]
    assert sum(int(r.get("count", 1)) for r in failures) == 30 * 4
    assert len(failures) <= 3  # the first one, then one summary (one user, method, reason)
    assert failures[0].get("key_fingerprint") and not failures[0].get("summary")
    summary = failures[-1]
    assert summary["summary"] is True and summary["count"] == 30 * 4 - 1
    assert summary["first"] <= summary["last"]
    for record in failures:
        assert record["auth_method"] == "publickey"
        assert record["user_given"] == "u" * 64 + "...[936 more characters]"
    size = sum(p.stat().st_size for p in (root / "audit").glob("journal-*.jsonl"))
    assert size < 20_000  # one record each with 1 KB names was ~150 KB
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


def test_low_disk_sheds_unauthenticated_records_not_transfers(
    make_gateway,
    keys,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.WARNING, logger="conduit.audit")
    gw = site(make_gateway, keys, tmp_path, 'journal_min_free = "1PiB"')  # always "low"
    root = tmp_path / "site"
    gw.call(unknown_keys(gw.port, gw.known_hosts, 5, 3), timeout=60)
    src = random_file(tmp_path / "fw.bin", 50_000)
    assert gw.scp(str(src), ":/inbox/").returncode == 0
    records = journal_records(root / "audit")
    assert not [r for r in records if r["type"] == "auth.failure"]
    alerts = [r for r in records if r["type"] == "audit.alert" and r["outcome"] == "failed"]
    assert len(alerts) == 1 and "journal_min_free" in alerts[0]["reason"]
    assert "shed" in caplog.text
    uploads = [r for r in records if r["type"] == "file.upload" and r["outcome"] == "success"]
    assert len(uploads) == 1 and uploads[0]["path"] == "/inbox/fw.bin"
    # room again: the alert says so, with how many were shed
    gw.gateway.noise.min_free = 0
    gw.gateway.noise._checked = -10.0  # look at the disk now, not in a second
    gw.call(gw.gateway.noise.flush())

    def resumed() -> list[dict]:  # type: ignore[type-arg]
        return [
            r
            for r in journal_records(root / "audit")
            if r["type"] == "audit.alert" and r["outcome"] == "success"
        ]

    back = wait_for(resumed)
    assert back and "15 were shed" in back[0]["reason"]
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0
