"""What a session remembers of the policy between two requests is never stale.

A tree's files used to ask, each, whether their folder is one (a stat and its
policy questions). The sink now remembers the answer under the policy and the
minute it was given in. These cases change what the sink was told between two
files of one tree and check it acts on the change: a reload that takes the
area away, a folder swapped for a link that leaves the area, a folder renamed.
Driven over a raw ``scp -r -t`` channel, so each step lands between two files.
An upload's commit likewise reuses the delete answer it got at its open only
under the same policy and minute (the last case).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.support.gateway import RunningGateway, policy_text

ALL_OPS = '"list", "read", "write", "mkdir", "rename", "delete"'


@pytest.fixture
def on_disk(gw: RunningGateway) -> RunningGateway:
    """A gateway whose policy file exists on disk, where reload reads it."""
    assert gw.config.source is not None
    gw.config.source.write_text(policy_text(gw.root, gw.keys))
    return gw


async def _reply(process: Any) -> bytes:
    first: bytes = await process.stdout.read(1)
    if first in (b"", b"\0"):
        return first
    return first + await process.stdout.readline()


def tree_with_a_change(gw: RunningGateway, change: Callable[[], None]) -> list[bytes]:
    """``sub/a.txt``, then ``change()``, then ``sub/b.txt``: every reply the sink gave."""

    async def scenario() -> list[bytes]:
        async with gw.connect() as conn:
            process = await conn.create_process("scp -r -t /inbox", encoding=None)
            replies = [await _reply(process)]
            for step in (b"D0755 0 sub\n", b"C0644 3 a.txt\n", b"aaa", b"\0"):
                process.stdin.write(step)
                if step != b"aaa":
                    replies.append(await _reply(process))
            change()
            process.stdin.write(b"C0644 3 b.txt\n")
            replies.append(await _reply(process))
            if replies[-1] == b"\0":  # accepted: send it (the test then fails on disk)
                process.stdin.write(b"bbb\0")
                replies.append(await _reply(process))
            process.stdin.write_eof()
            await process.wait(timeout=20)
            return replies

    replies: list[bytes] = gw.call(scenario(), timeout=60)
    assert replies[:4] == [b"\0"] * 4  # start, D, C a.txt, its data: all accepted
    return replies


def names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_reload_between_two_files_is_asked_again(on_disk: RunningGateway) -> None:
    """The area taken away between two files of a tree: the folder question is put
    to the new policy (a refusal that ends the sink), not answered from before."""
    source = on_disk.config.source
    assert source is not None

    def take_the_inbox_away() -> None:
        text = source.read_text().replace(f'{{ target = "inbox", ops = [{ALL_OPS}] }},', "")
        assert text != source.read_text()
        source.write_text(text)
        on_disk.gateway.reload()

    replies = tree_with_a_change(on_disk, take_the_inbox_away)
    assert replies[4].startswith(b"\x01"), replies
    assert names(on_disk.area("inbox")) == ["sub", "sub/a.txt"]
    denied = on_disk.recorder.of("access.denied")
    # the folder was asked about again (and hidden now), so the file was taken as
    # the target itself, as for any folder that is not one: never sub/b.txt
    asked = [(d["operation"], d["path"]) for d in denied]
    assert asked == [("list", "/inbox/sub"), ("write", "/inbox/sub")]


def test_folder_swapped_for_an_escaping_link_between_two_files(
    gw: RunningGateway, tmp_path: Path
) -> None:
    inbox = gw.area("inbox")
    outside = tmp_path / "outside"
    outside.mkdir()

    def swap() -> None:
        os.rename(inbox / "sub", inbox / "moved")
        os.symlink(outside, inbox / "sub")

    replies = tree_with_a_change(gw, swap)
    assert replies[4].startswith((b"\x01", b"\x02")), replies
    assert list(outside.iterdir()) == []  # nothing followed the link out
    assert names(inbox) == ["moved", "moved/a.txt", "sub"]
    assert (inbox / "sub").is_symlink()
    assert gw.recorder.of("file.upload", "success")[-1]["path"] == "/inbox/sub/a.txt"


def test_folder_renamed_between_two_files(gw: RunningGateway) -> None:
    """The next file is refused: it does not land under the folder's old name
    (a file called ``sub``) nor in the folder's new place."""
    inbox = gw.area("inbox")

    def rename() -> None:
        os.rename(inbox / "sub", inbox / "moved")

    replies = tree_with_a_change(gw, rename)
    assert replies[4].startswith((b"\x01", b"\x02")), replies
    assert names(inbox) == ["moved", "moved/a.txt"]
    assert [u["path"] for u in gw.recorder.of("file.upload", "success")] == ["/inbox/sub/a.txt"]


def test_folder_replaced_by_a_new_one_between_two_files(gw: RunningGateway) -> None:
    """A folder renamed away and a new one made under its name: the next file goes
    into the folder the name leads to now (names are resolved at each write)."""
    inbox = gw.area("inbox")

    def replace() -> None:
        os.rename(inbox / "sub", inbox / "moved")
        (inbox / "sub").mkdir()

    replies = tree_with_a_change(gw, replace)
    assert replies[4:] == [b"\0", b"\0"]
    assert names(inbox) == ["moved", "moved/a.txt", "sub", "sub/b.txt"]


def test_reload_between_open_and_commit_asks_delete_again(on_disk: RunningGateway) -> None:
    """An upload's commit reuses the delete answer it got at open only under the same
    policy: delete taken away by a reload while the name got taken meanwhile, the
    commit refuses to replace the file instead of trusting the answer from before."""
    source = on_disk.config.source
    assert source is not None
    inbox = on_disk.area("inbox")

    async def scenario() -> bool:
        async with on_disk.connect() as conn, conn.start_sftp_client() as sftp:
            f = await sftp.open("/inbox/x.bin", "wb")
            await f.write(b"new bytes")
            (inbox / "x.bin").write_bytes(b"made meanwhile")
            source.write_text(source.read_text().replace(ALL_OPS, '"list", "read", "write"'))
            on_disk.gateway.reload()
            try:
                await f.close()
            except asyncssh.SFTPError:
                return False
            return True

    assert on_disk.call(scenario()) is False
    assert (inbox / "x.bin").read_bytes() == b"made meanwhile"
    denied = on_disk.recorder.of("access.denied")
    assert [(d["operation"], d["path"]) for d in denied] == [("delete", "/inbox/x.bin")]
