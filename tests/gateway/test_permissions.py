"""The permission matrix: each operation allowed or refused per grant, checked on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway


@pytest.fixture
def seeded(gw: RunningGateway) -> RunningGateway:
    for area in ("inbox", "outbox"):
        (gw.area(area) / "f.txt").write_text(f"{area}\n")
        (gw.area(area) / "d").mkdir()
    return gw


# (user, sftp command, allowed?, what the disk must show afterwards)
MATRIX = [
    ("alice", "ls /inbox", True),
    ("alice", "get /inbox/f.txt {tmp}/x", True),
    ("alice", "put {src} /inbox/new.txt", True),
    ("alice", "mkdir /inbox/nd", True),
    ("alice", "rename /inbox/f.txt /inbox/g.txt", True),
    ("alice", "rm /inbox/f.txt", True),
    ("alice", "rmdir /inbox/d", True),
    ("alice", "ls /outbox", True),
    ("alice", "get /outbox/f.txt {tmp}/x", True),
    ("alice", "put {src} /outbox/new.txt", False),
    ("alice", "mkdir /outbox/nd", False),
    ("alice", "rename /outbox/f.txt /outbox/g.txt", False),
    ("alice", "rename /outbox/f.txt /inbox/g.txt", False),
    ("alice", "rename /inbox/f.txt /outbox/g.txt", False),
    ("alice", "rm /outbox/f.txt", False),
    ("alice", "rmdir /outbox/d", False),
    ("alice", "ls /inbox-archive", False),
    ("alice", "mkdir /newarea", False),
    ("alice", "rmdir /inbox", False),
    ("alice", "rename /inbox /inbox2", False),
    ("alice", "symlink /inbox/f.txt /inbox/l", False),
    ("alice", "ln /inbox/f.txt /inbox/h", False),
    ("bob", "put {src} /inbox/new.txt", True),
    ("bob", "ls /inbox", False),
    ("bob", "get /inbox/f.txt {tmp}/x", False),
    ("bob", "rm /inbox/f.txt", False),
    ("bob", "mkdir /inbox/nd", False),
    ("bob", "rename /inbox/f.txt /inbox/g.txt", False),
    ("bob", "get /outbox/f.txt {tmp}/x", False),
]


def snapshot(gw: RunningGateway) -> dict[str, list[str]]:
    return {a: sorted(os.listdir(gw.area(a))) for a in ("inbox", "outbox", "inbox-archive")}


@pytest.mark.parametrize(("user", "command", "allowed"), MATRIX)
def test_permission_matrix(
    seeded: RunningGateway, tmp_path: Path, user: str, command: str, allowed: bool
) -> None:
    src = tmp_path / "src.txt"
    src.write_text("new\n")
    before = snapshot(seeded)
    result = seeded.sftp(command.format(src=src, tmp=tmp_path) + "\n", user=user)
    if allowed:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert snapshot(seeded) == before  # nothing happened
        assert not (tmp_path / "x").exists()
        reason = result.stderr.lower()
        assert any(
            w in reason
            for w in (
                "denied",
                "not granted",
                "not allowed",
                "no such",
                "not supported",
                "does not support",
                "not found",
                "cannot",
            )
        ), reason


def test_denials_are_recorded_with_reason(seeded: RunningGateway) -> None:
    seeded.sftp("rm /outbox/f.txt\n")
    denied = seeded.recorder.of("access.denied")
    assert [(e["operation"], e["path"]) for e in denied] == [("delete", "/outbox/f.txt")]
    assert denied[0]["principal"] == "alice" and denied[0]["reason"]
