"""A legacy SCP download of a tree trusts its folder's listing only as far as it may.

A file the listing named is not stat'ed again before it is sent (a policy
question and a confined resolution per file); the open that follows asks
the policy and resolves the name itself. These cases change the next file
between the listing and its turn and check that the open is what decides:
the file turned into a folder, into a link that leaves the area, removed,
grown, or the read taken away by a reload. Driven over a raw ``scp -r -f``
channel, so each change lands between two files of one folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import RunningGateway, policy_text


async def _rest(process: Any) -> list[bytes]:
    """Everything the source sends until it ends, acknowledged as a client would."""
    got: list[bytes] = []
    while True:
        line: bytes = await process.stdout.readline()
        if not line:
            return got
        if line.startswith(b"C"):
            process.stdin.write(b"\0")
            size = int(line.split()[1])
            data = await process.stdout.readexactly(size + 1)  # the bytes and an OK
            got.extend([line, data[:-1]])
            process.stdin.write(b"\0")
        elif line.startswith((b"D", b"E")):
            got.append(line)
            process.stdin.write(b"\0")
        else:
            got.append(line)  # a warning: nothing to acknowledge
            if line.startswith(b"\x02"):
                return got


def tree_with_a_change(gw: RunningGateway, change: Callable[[], None]) -> list[bytes]:
    """``/outbox/sub`` (``a.txt``, ``b.txt``, ``c.txt``); ``change()`` once ``a.txt``
    is sent (the folder was listed before it): every line and file body sent."""
    sub = gw.area("outbox") / "sub"
    sub.mkdir()
    for name in ("a", "b", "c"):
        (sub / f"{name}.txt").write_bytes(name.encode() * 3)

    async def scenario() -> list[bytes]:
        async with gw.connect() as conn:
            process = await conn.create_process("scp -r -f /outbox/sub", encoding=None)
            process.stdin.write(b"\0")
            assert await process.stdout.readline() == b"D0755 0 sub\n"
            process.stdin.write(b"\0")
            assert (await process.stdout.readline()).endswith(b" 3 a.txt\n")
            process.stdin.write(b"\0")
            assert await process.stdout.readexactly(4) == b"aaa\0"
            change()
            process.stdin.write(b"\0")
            got = await _rest(process)
            process.stdin.write_eof()
            await process.wait(timeout=20)
            return got

    got: list[bytes] = gw.call(scenario(), timeout=60)
    assert got[-1] == b"E\n"  # the folder ended in order, whatever was refused in it
    return got


def sent(got: list[bytes], name: str) -> bool:
    return any(line.startswith(b"C") and line.endswith(f" {name}\n".encode()) for line in got)


def warned(got: list[bytes], name: str) -> bool:
    return any(line.startswith(b"\x01") and name.encode() in line for line in got)


def test_file_turned_into_a_folder_after_the_listing_is_skipped(gw: RunningGateway) -> None:
    """Skipped with a warning (the open finds a folder), not sent as a folder:
    the client gets the tree the listing described, less what changed."""
    sub = gw.area("outbox") / "sub"

    def to_folder() -> None:
        os.unlink(sub / "b.txt")
        (sub / "b.txt").mkdir()
        (sub / "b.txt" / "inner").write_bytes(b"x")

    got = tree_with_a_change(gw, to_folder)
    assert not sent(got, "b.txt") and not sent(got, "inner")
    assert warned(got, "b.txt") and sent(got, "c.txt")


def test_file_swapped_for_an_escaping_link_is_not_followed(
    gw: RunningGateway, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the area")
    sub = gw.area("outbox") / "sub"

    def to_link() -> None:
        os.unlink(sub / "b.txt")
        os.symlink(secret, sub / "b.txt")

    got = tree_with_a_change(gw, to_link)
    assert not sent(got, "b.txt") and sent(got, "c.txt")
    assert not any(b"outside the area" in part for part in got)
    denied = [d for d in gw.recorder.of("access.denied") if d["path"] == "/outbox/sub/b.txt"]
    assert denied and denied[0]["rule"] == "storage"


def test_file_removed_is_skipped_with_a_warning(gw: RunningGateway) -> None:
    got = tree_with_a_change(gw, lambda: os.unlink(gw.area("outbox") / "sub" / "b.txt"))
    assert not sent(got, "b.txt")
    assert warned(got, "b.txt") and sent(got, "c.txt")


def test_file_grown_is_sent_at_its_size_when_opened(gw: RunningGateway) -> None:
    path = gw.area("outbox") / "sub" / "b.txt"
    grown = b"b" * 5000

    def grow() -> None:
        path.write_bytes(grown)

    got = tree_with_a_change(gw, grow)
    index = next(i for i, line in enumerate(got) if line.endswith(b" b.txt\n"))
    assert got[index].startswith(b"C0") and got[index].split()[1] == b"5000"
    assert got[index + 1] == grown
    done = [r for r in gw.recorder.of("file.download", "success") if r["path"].endswith("b.txt")]
    assert done[-1]["sha256"] == hashlib.sha256(grown).hexdigest()


@pytest.fixture
def on_disk(gw: RunningGateway) -> RunningGateway:
    """A gateway whose policy file exists on disk, where reload reads it."""
    assert gw.config.source is not None
    gw.config.source.write_text(policy_text(gw.root, gw.keys))
    return gw


def test_read_taken_away_by_a_reload_is_refused(on_disk: RunningGateway) -> None:
    source = on_disk.config.source
    assert source is not None

    def list_only() -> None:
        old = '{ target = "outbox", ops = ["list", "read"] }'
        text = source.read_text().replace(old, '{ target = "outbox", ops = ["list"] }')
        assert text != source.read_text()
        source.write_text(text)
        on_disk.gateway.reload()

    got = tree_with_a_change(on_disk, list_only)
    assert not sent(got, "b.txt") and not sent(got, "c.txt")
    assert warned(got, "b.txt") and warned(got, "c.txt")
    denied = [d for d in on_disk.recorder.of("access.denied") if d["operation"] == "read"]
    assert denied and denied[0]["path"] == "/outbox/sub/b.txt"
