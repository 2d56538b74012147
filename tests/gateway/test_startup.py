"""Nothing a user can create in an area may stop the gateway from starting."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.config import Config, parse
from tests.storage.test_sweep import ORPHAN, deepest, nest
from tests.support.gateway import (
    policy_text,
    start_gateway,
    stop_gateway,
    wait_for,
)


@pytest.fixture
def site(tmp_path: Path, keys: dict[str, Path]) -> Iterator[Config]:
    """A policy whose folders outlive one gateway; its deep trees are removed after."""
    root = tmp_path / "site"
    root.mkdir()
    yield parse(policy_text(root, keys), source=root / "conduit.toml")
    # pytest's own clean-up of old temp folders recurses: remove deep trees here
    subprocess.run(["rm", "-rf", str(root)], check=True)


def test_deep_tree_on_disk_does_not_stop_start_up(site: Config, keys: dict[str, Path]) -> None:
    inbox = site.areas["inbox"].path
    inbox.mkdir(parents=True)
    nest(inbox, 1200)  # deeper than Python's recursion limit
    for i in range(300):  # and a wide folder beside it
        (inbox / "wide").mkdir(exist_ok=True)
        (inbox / "wide" / f"n{i}").mkdir()
    second = start_gateway(site, keys, inbox.parents[1])
    try:
        listing = second.sftp("ls /inbox\n")
        assert listing.returncode == 0, listing.stderr
        assert "wide" in listing.stdout
        # the crash leftover at the bottom is swept, after the listener is up
        assert wait_for(lambda: ORPHAN not in deepest(inbox, 1200), timeout=30)
        assert deepest(inbox, 1200) == ["keep.txt"]
        assert not second.recorder.of("gateway.start", "failed")
    finally:
        stop_gateway(second)


def test_deep_tree_made_over_sftp_does_not_stop_start_up(
    site: Config, keys: dict[str, Path]
) -> None:
    root = site.areas["inbox"].path.parents[1]
    first = start_gateway(site, keys, root)
    depth = 1200

    async def dig() -> str:
        path = "/inbox"
        async with first.connect() as conn, conn.start_sftp_client() as sftp:
            for _ in range(depth):
                path += "/d"
                await sftp.mkdir(path)
        return path

    try:
        bottom = first.call(dig(), timeout=240)
    finally:
        stop_gateway(first)
    assert bottom.count("/d") == depth
    second = start_gateway(site, keys, root)

    async def prove() -> None:
        async with second.connect() as conn, conn.start_sftp_client() as sftp:
            async with sftp.open(f"{bottom}/proof.txt", "wb") as f:
                await f.write(b"served")

    try:
        listing = second.sftp("ls /inbox\n")  # OpenSSH's batch lines are too short for bottom
        assert listing.returncode == 0, listing.stderr
        second.call(prove(), timeout=60)
        assert deepest(second.area("inbox"), depth) == ["proof.txt"]
    finally:
        stop_gateway(second)
