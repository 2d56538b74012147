"""A download's size check reuses the open's decision only when it cannot differ.

``open_read`` asks the policy about the read without a size (before touching
storage), then with the file's real size. The second question is answered
from the first within the same policy and minute when the conduit that
allowed has no limit or the file fits it. Hostile cases first: a limit the
file exceeds while a later conduit has none, a limit nothing lifts, a window
closing and a reload landing between the two questions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path

import pytest

from conduit.config import parse
from conduit.config.model import Obligation
from conduit.errors import StorageError
from conduit.gateway.context import SessionInfo
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import resolve
from conduit.policy import Decision, Policy, Request
from conduit.storage.local import LocalBackend
from tests.support.gateway import MemoryRecorder

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

#: A plant area an office user may list and read (templates: root, key), no conduit yet.
PLANT_OFFICE = """
[gateway]
data_dir = "{root}/data"

[zones.office]
level = 4
networks = ["10.0.0.0/8"]

[zones.plant]
level = 3
networks = ["192.168.0.0/16"]

[areas.out]
zone = "plant"
path = "{root}/out"

[roles.engineer]
grants = [{{ target = "out", ops = ["list", "read"] }}]

[users.alice]
keys = ["{key}"]
roles = ["engineer"]
"""

SITE = (
    PLANT_OFFICE
    + """
[[conduits]]
name = "small-logs"
from = "plant"
to = "office"
paths = ["*.log"]
max_size = "1KiB"

[[conduits]]
name = "reports"
from = "plant"
to = "office"
paths = ["*.log", "*.csv"]

[[conduits]]
name = "tiny-bins"
from = "plant"
to = "office"
paths = ["*.bin"]
max_size = "1KiB"

[[conduits]]
name = "shift"
from = "plant"
to = "office"
paths = ["*.dat"]
window = "daily 10:00-10:02"
"""
)

#: The same site with no read of anything: what a reload might bring.
NO_READS = SITE.replace('ops = ["list", "read"]', 'ops = ["list"]')


class Clock:
    """The policy's clock: ``times`` in turn, then the last one; ``on_call`` runs on each call."""

    def __init__(self, *times: str) -> None:
        self.times = [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in times]
        self.calls = 0
        self.on_call: Callable[[int], None] = lambda n: None

    def __call__(self) -> datetime:
        self.calls += 1
        self.on_call(self.calls)
        return self.times[min(self.calls, len(self.times)) - 1]


@dataclass
class Site:
    policy: Policy
    areas: dict[str, LocalBackend]
    recorder: MemoryRecorder = field(default_factory=MemoryRecorder)
    devices: dict[str, LocalBackend] = field(default_factory=dict)


def make(tmp_path: Path, clock: Clock, text: str = SITE) -> Site:
    config = parse(text.format(root=tmp_path, key=KEY), source=tmp_path / "conduit.toml")
    areas = {name: LocalBackend(name, a.path) for name, a in config.areas.items()}
    return Site(Policy(config, clock=clock), areas)


def session(site: Site) -> Operations:
    info = SessionInfo("s1", "alice", ip_address("10.0.0.5"), "office", "sftp")
    return Operations(site, info)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def clock() -> Clock:
    return Clock("2026-12-03T10:01:00")


async def test_a_limit_the_file_exceeds_asks_again_and_a_later_conduit_allows(
    tmp_path: Path, clock: Clock
) -> None:
    site = make(tmp_path, clock)
    (tmp_path / "out" / "big.log").write_bytes(b"x" * 4096)
    down = await session(site).open_read(resolve("/out/big.log"))
    assert await down.read(0, 8192) == b"x" * 4096
    await down.close()
    (started,) = site.recorder.of("file.download", "started")
    (done,) = site.recorder.of("file.download", "success")
    assert done["bytes"] == 4096 and done["sha256"]
    # the journal names the conduit that took the file, not the one whose limit it passed
    assert started["rule"] == done["rule"] == "conduits[reports]"
    assert not site.recorder.of("access.denied")


async def test_a_later_conduit_that_takes_the_file_brings_its_obligations(
    tmp_path: Path, clock: Clock
) -> None:
    """The first conduit allows small firmware freely; the one that takes any
    size requires an approval. A big file must meet the approval: the open's
    answer (asked without a size, from the first conduit) carried none, and
    serving on it would let a file through the conduit that demands one."""
    text = (
        SITE
        + """
[[conduits]]
name = "tiny-fw"
from = "plant"
to = "office"
paths = ["*.fw"]
max_size = "1KiB"

[[conduits]]
name = "approved-fw"
from = "plant"
to = "office"
paths = ["*.fw"]
require = ["approval"]
"""
    )
    config = parse(text.format(root=tmp_path, key=KEY), source=tmp_path / "conduit.toml")
    areas = {name: LocalBackend(name, a.path) for name, a in config.areas.items()}
    site = Site(Policy(config, clock=clock, enforceable=frozenset({Obligation.APPROVAL})), areas)
    (tmp_path / "out" / "big.fw").write_bytes(b"x" * 4096)
    (tmp_path / "out" / "small.fw").write_bytes(b"x" * 100)
    ops = session(site)
    before = open_fds()
    # this site has no quarantine to vouch for the approval: refused, file closed
    with pytest.raises(StorageError):
        await ops.open_read(resolve("/out/big.fw"))
    assert open_fds() == before
    assert not site.recorder.of("file.download")
    down = await ops.open_read(resolve("/out/small.fw"))  # the free conduit's size
    assert await down.read(0, 1000) == b"x" * 100
    await down.close()
    (started,) = site.recorder.of("file.download", "started")
    assert started["rule"] == "conduits[tiny-fw]"


async def test_a_limit_nothing_lifts_refuses_and_closes_the_file(
    tmp_path: Path, clock: Clock
) -> None:
    site = make(tmp_path, clock)
    (tmp_path / "out" / "big.bin").write_bytes(b"x" * 4096)
    (tmp_path / "out" / "small.bin").write_bytes(b"x" * 1000)
    ops = session(site)
    before = open_fds()
    with pytest.raises(StorageError):
        await ops.open_read(resolve("/out/big.bin"))
    assert open_fds() == before
    (denied,) = site.recorder.of("access.denied")
    assert "max_size 1024 < size 4096" in denied["reason"]
    assert not site.recorder.of("file.download")
    down = await ops.open_read(resolve("/out/small.bin"))  # within the limit: allowed
    await down.close()


async def test_a_window_closing_between_the_two_questions_refuses(tmp_path: Path) -> None:
    """The open's answer is from 10:01, the size is checked at 10:02, when the
    window has closed: the policy is asked again and says no."""
    clock = Clock("2026-12-03T10:01:59", "2026-12-03T10:01:59", "2026-12-03T10:02:00")
    site = make(tmp_path, clock)
    (tmp_path / "out" / "shift.dat").write_bytes(b"x" * 100)
    with pytest.raises(StorageError):
        await session(site).open_read(resolve("/out/shift.dat"))
    (denied,) = site.recorder.of("access.denied")
    assert "now is Thu 10:02" in denied["reason"]
    assert not site.recorder.of("file.download")


async def test_a_reload_between_the_two_questions_refuses(tmp_path: Path, clock: Clock) -> None:
    site = make(tmp_path, clock)
    reloaded = make(tmp_path / "reloaded", Clock("2026-12-03T10:01:00"), NO_READS).policy
    (tmp_path / "out" / "shift.dat").write_bytes(b"x" * 100)

    def reload_during_the_first_decision(calls: int) -> None:
        if calls == 2:  # 1: the moment before the open's decision; 2: its window, inside it
            site.policy = reloaded

    clock.on_call = reload_during_the_first_decision
    with pytest.raises(StorageError):
        await session(site).open_read(resolve("/out/shift.dat"))
    assert site.policy is reloaded
    (denied,) = site.recorder.of("access.denied")
    assert denied["operation"] == "read"
    assert not site.recorder.of("file.download")


async def test_within_the_moment_the_policy_is_asked_once(tmp_path: Path, clock: Clock) -> None:
    site = make(tmp_path, clock)
    (tmp_path / "out" / "a.csv").write_bytes(b"x" * 100)
    asked: list[Request] = []
    decide = site.policy.decide

    def counted(request: Request) -> Decision:
        asked.append(request)
        return decide(request)

    site.policy.decide = counted  # type: ignore[method-assign]
    down = await session(site).open_read(resolve("/out/a.csv"))
    assert await down.read(0, 1000) == b"x" * 100
    await down.close()
    assert len(asked) == 1
