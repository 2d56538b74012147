"""The gateway's recorder: ``Operations`` -> ``EventLog`` -> the journal.

``Operations`` hands the gateway's own :class:`EventLog` its fields as one dict
(``record_fields``) rather than as keywords, and the console echo's level is
worked out once per (type, outcome). Neither may change a record, the chain
or the console: the journal written through the dict is the journal written
through keywords (another recorder's way), record for record, and verifies.
"""

from __future__ import annotations

import logging
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from conduit.audit import Auditor, verify
from conduit.audit.checkpoint import load_public_key
from conduit.audit.events import EventOutcome, EventType
from conduit.audit.reader import JournalReader
from conduit.config import parse
from conduit.config.model import AuditConfig
from conduit.errors import StorageError
from conduit.gateway.context import SessionInfo
from conduit.gateway.eventlog import EventLog
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import resolve
from conduit.policy import Policy
from conduit.storage.local import LocalBackend
from tests.gateway.test_operations import KEY, SITE, FakeSite

#: What differs between two runs of the same operations (times, ids, the chain).
VOLATILE = {
    "seq",
    "ts",
    "prev",
    "transfer",
    "intent",
    "duration",
    "temp",
    "sig",
    "head_hash",
    "key",
}


class Keywords:
    """Not an ``EventLog``: Operations calls it with keywords, as any recorder."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> int:
        return await self.log.record(type, outcome, durable=durable, hold=hold, **fields)


async def run_operations(root: Path, keywords: bool) -> list[dict[str, Any]]:
    """Upload, download, rename, delete, a refused write and a hostile name through
    Operations on a real journal; the records as the journal has them."""
    config = parse(SITE.format(root=root, key=KEY), source=root / "conduit.toml")
    areas = {name: LocalBackend(name, area.path) for name, area in config.areas.items()}
    for area in config.areas.values():
        area.path.mkdir(parents=True, exist_ok=True)
    auditor = await Auditor.open(AuditConfig(journal=root / "audit"), "gw-1", root / "keys")
    log = EventLog(auditor)
    site = FakeSite(Policy(config), areas, Keywords(log) if keywords else log)  # type: ignore[arg-type]
    ops = Operations(site, SessionInfo("s1", "alice", ip_address("10.0.0.5"), "ops", "sftp"))
    upload = await ops.open_write(resolve("/inbox/a.bin"))
    await upload.write(0, b"x" * 5000)
    await upload.commit()
    download = await ops.open_read(resolve("/inbox/a.bin"))
    await download.read(0, 8192)
    await download.close()
    await ops.rename(resolve("/inbox/a.bin"), resolve("/inbox/b.bin"), overwrite=False)
    await ops.remove(resolve("/inbox/b.bin"))
    with pytest.raises(StorageError):
        await ops.open_write(resolve("/outbox/no.bin"))  # list and read only there
    await ops.refuse("write", "/inbox/\udcff\u202e\n", "bad name")
    await auditor.close()
    assert verify(root / "audit", load_public_key(root / "keys" / "audit_ed25519.pub")).ok
    return JournalReader(root / "audit").read_after(0, 1000)


async def test_records_through_the_dict_are_the_records_through_keywords(tmp_path):
    (tmp_path / "dict").mkdir()
    (tmp_path / "keywords").mkdir()
    direct = await run_operations(tmp_path / "dict", keywords=False)
    keyword = await run_operations(tmp_path / "keywords", keywords=True)
    kept = [{k: v for k, v in r.items() if k not in VOLATILE} for r in direct]
    assert kept == [{k: v for k, v in r.items() if k not in VOLATILE} for r in keyword]
    assert [list(r) for r in direct] == [list(r) for r in keyword]  # same keys, same order
    files = [r for r in direct if r["type"].startswith("file.")]
    assert {(r["type"], r["outcome"]) for r in files} >= {
        ("file.upload", "started"),
        ("file.upload", "intent"),
        ("file.upload", "success"),
        ("file.download", "started"),
        ("file.download", "success"),
        ("file.rename", "success"),
        ("file.delete", "success"),
    }
    for record in files + [r for r in direct if r["type"] == "access.denied"]:
        # the session's fields in every record, and no field left as null
        assert record["principal"] == "alice" and record["session"] == "s1"
        assert None not in record.values()
    assert any(r.get("path") == "/inbox/\udcff\u202e\n" for r in direct)


@pytest.mark.parametrize("kind", [str, lambda v: v])  # plain text, or the enum members
async def test_the_console_echo_keeps_its_levels(tmp_path, caplog, kind):
    caplog.set_level(logging.DEBUG, logger="conduit.audit")
    auditor = await Auditor.open(AuditConfig(journal=tmp_path / "audit"), "gw-1", tmp_path)
    log = EventLog(auditor)
    cases = [
        (EventType.FILE_UPLOAD, EventOutcome.SUCCESS, logging.DEBUG),
        (EventType.DIR_CREATE, EventOutcome.INTENT, logging.DEBUG),
        (EventType.FILE_UPLOAD, EventOutcome.FAILED, logging.INFO),
        (EventType.ACCESS_DENIED, EventOutcome.DENIED, logging.INFO),
        (EventType.SESSION_START, EventOutcome.SUCCESS, logging.INFO),
        (EventType.DEVICE_CONNECT, EventOutcome.SUCCESS, None),  # shown by its own code
    ]
    for _ in range(2):  # the second time from what was worked out the first
        for type_, outcome, level in cases:
            caplog.clear()
            seq = await log.record(kind(type_), kind(outcome), path="/a", note=None)
            shown = [(r.levelno, r.getMessage()) for r in caplog.records]
            if level is None:
                assert shown == []
            else:
                assert shown == [(level, f"#{seq} {type_} {outcome} path='/a'")]
    await auditor.close()
