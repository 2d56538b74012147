"""``Operations`` without SSH: policy, storage and audit together, in milliseconds.

A real :class:`~conduit.storage.local.LocalBackend` on a temporary folder, a
real compiled :class:`~conduit.policy.Policy`, and a recorder that can be
made to fail like a journal whose disk is full. The protocol servers only
translate wire messages into these calls, so what holds here holds for SFTP
and SCP alike; the end-to-end tests check the translation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from conduit.config import parse
from conduit.errors import Fault, StorageError
from conduit.gateway.context import SessionInfo
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import resolve
from conduit.policy import Policy
from conduit.storage.base import Backend
from conduit.storage.local import LocalBackend
from tests.support.gateway import MemoryRecorder

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

SITE = """
[gateway]
data_dir = "{root}/data"

[zones.ops]
level = 3
networks = ["10.0.0.0/8"]

[areas.inbox]
zone = "ops"
path = "{root}/inbox"

[areas.outbox]
zone = "ops"
path = "{root}/outbox"

[roles.engineer]
grants = [
  {{ target = "inbox", ops = ["list", "read", "write", "mkdir", "rename", "delete"] }},
  {{ target = "outbox", ops = ["list", "read"] }},
]

[users.alice]
keys = ["{key}"]
roles = ["engineer"]
"""


class FlakyRecorder(MemoryRecorder):
    """A journal that can be made to refuse records, like one on a full disk."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def record(self, type: str, outcome: str, *, durable: bool = True, **fields: Any) -> None:
        if self.down:
            raise OSError(28, "No space left on device")
        await super().record(type, outcome, durable=durable, **fields)


@dataclass
class FakeSite:
    """The four things a session asks of the running gateway."""

    policy: Policy
    areas: Mapping[str, Backend]
    recorder: FlakyRecorder
    devices: Mapping[str, Backend] = field(default_factory=dict)


@pytest.fixture
def site(tmp_path: Path) -> FakeSite:
    config = parse(SITE.format(root=tmp_path, key=KEY), source=tmp_path / "conduit.toml")
    areas = {name: LocalBackend(name, area.path) for name, area in config.areas.items()}
    return FakeSite(Policy(config), areas, FlakyRecorder())


@pytest.fixture
def ops(site: FakeSite) -> Operations:
    session = SessionInfo("s1", "alice", ip_address("10.0.0.5"), "ops", "sftp")
    return Operations(site, session)


def area(site: FakeSite, name: str) -> Path:
    return site.policy.config.areas[name].path


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def upload(ops: Operations, path: str, data: bytes) -> str:
    transfer = await ops.open_write(resolve(path))
    await transfer.write(0, data)
    return await transfer.commit()


async def test_upload_lands_whole_and_is_recorded(ops: Operations, site: FakeSite) -> None:
    await upload(ops, "/inbox/a.bin", b"firmware")
    assert (area(site, "inbox") / "a.bin").read_bytes() == b"firmware"
    (done,) = site.recorder.of("file.upload", "success")
    assert done["bytes"] == 8 and len(done["sha256"]) == 64
    assert ops.traffic.transfers_open == 0 and ops.traffic.bytes_in == 8


async def test_download_reads_and_is_recorded(ops: Operations, site: FakeSite) -> None:
    (area(site, "outbox") / "log.txt").write_bytes(b"boot ok\n")
    transfer = await ops.open_read(resolve("/outbox/log.txt"))
    assert await transfer.read(0, 100) == b"boot ok\n"
    await transfer.close()
    (done,) = site.recorder.of("file.download", "success")
    assert done["bytes"] == 8 and ops.traffic.transfers_open == 0


async def test_changes_happen_and_are_recorded(ops: Operations, site: FakeSite) -> None:
    inbox = area(site, "inbox")
    await ops.mkdir(resolve("/inbox/sub"))
    await upload(ops, "/inbox/sub/a.txt", b"x")
    await ops.rename(resolve("/inbox/sub/a.txt"), resolve("/inbox/sub/b.txt"), overwrite=False)
    assert [p.name for p in (inbox / "sub").iterdir()] == ["b.txt"]
    await ops.remove(resolve("/inbox/sub/b.txt"))
    await ops.rmdir(resolve("/inbox/sub"))
    assert list(inbox.iterdir()) == []
    for type in ("dir.create", "file.rename", "file.delete", "dir.delete"):
        assert site.recorder.of(type, "success"), type


async def test_denied_change_is_recorded_and_leaves_storage_alone(
    ops: Operations, site: FakeSite
) -> None:
    (area(site, "outbox") / "keep.txt").write_bytes(b"keep")
    with pytest.raises(StorageError):
        await ops.remove(resolve("/outbox/keep.txt"))
    with pytest.raises(StorageError):
        await upload(ops, "/outbox/new.txt", b"x")
    assert sorted(p.name for p in area(site, "outbox").iterdir()) == ["keep.txt"]
    assert len(site.recorder.of("access.denied")) == 2


async def test_read_refused_when_its_start_cannot_be_recorded(
    ops: Operations, site: FakeSite
) -> None:
    """No unrecorded read: the handle is closed and the session is not left
    counting a transfer that never started (its idle timeout must still fire)."""
    (area(site, "outbox") / "log.txt").write_bytes(b"boot ok\n")
    site.recorder.down = True
    before = open_files()
    with pytest.raises(StorageError) as refused:
        await ops.open_read(resolve("/outbox/log.txt"))
    assert refused.value.fault is Fault.UNAVAILABLE
    assert ops.traffic.transfers_open == 0
    assert open_files() == before


async def test_write_refused_when_its_start_cannot_be_recorded(
    ops: Operations, site: FakeSite
) -> None:
    site.recorder.down = True
    with pytest.raises(StorageError) as refused:
        await ops.open_write(resolve("/inbox/a.bin"))
    assert refused.value.fault is Fault.UNAVAILABLE
    assert ops.traffic.transfers_open == 0
    assert list(area(site, "inbox").iterdir()) == []


async def test_space_is_the_areas_file_system_and_needs_a_visible_path(
    ops: Operations, site: FakeSite
) -> None:
    space = await ops.space(resolve("/inbox"))
    vfs = os.statvfs(area(site, "inbox"))
    assert (space.blocks, space.block_size) == (vfs.f_blocks, vfs.f_bsize)
    for hidden in ("/nowhere", "/"):
        with pytest.raises(StorageError):
            await ops.space(resolve(hidden))
