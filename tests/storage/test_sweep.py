"""The start-up sweep of crash leftovers over trees a hostile user can build."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.storage import LocalBackend
from conduit.storage.fsops import sweep
from conduit.storage.local import TEMP_PREFIX

ORPHAN = f"{TEMP_PREFIX}deadbeef-left-by-a-crash.bin"
FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def nest(root: Path, depth: int, name: str = "d") -> list[str]:
    """``depth`` nested folders under ``root`` (built by descriptor: no path limit);
    an orphan temp file and a real file in the deepest one. Returns the names."""
    fd = os.open(root, FLAGS)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        for leaf in (ORPHAN, "keep.txt"):
            os.close(os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def deepest(root: Path, depth: int, name: str = "d") -> list[str]:
    fd = os.open(root, FLAGS)
    try:
        for _ in range(depth):
            child = os.open(name, FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A folder for deep trees, removed after the test: pytest's own clean-up
    of old temp folders recurses and would fail on them."""
    root = tmp_path / "tree"
    root.mkdir()
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=True)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_deep_chain_no_recursion_no_descriptor_per_level(tree: Path) -> None:
    # 2,040 levels: past Python's recursion limit and a 1,024-descriptor ulimit
    nest(tree, 2040)
    before = open_fds()
    result = LocalBackend("a", tree).cleanup_orphans()
    assert result.removed == 1
    assert result.stopped is None and result.too_deep == 0
    assert result.folders == 2041
    assert deepest(tree, 2040) == ["keep.txt"]
    assert open_fds() <= before + 1  # the backend's root; nothing left open by the walk


def test_depth_bound_counts_what_it_skipped(tmp_path: Path) -> None:
    nest(tmp_path, 50)
    fd = os.open(tmp_path, FLAGS)
    try:
        result = sweep(fd, lambda name: name.startswith(TEMP_PREFIX), max_depth=10)
    finally:
        os.close(fd)
    assert result.removed == 0
    assert result.too_deep == 1
    assert ORPHAN in deepest(tmp_path, 50)


def test_wide_folder_and_odd_names(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(3000):
        (wide / f"f{i}").touch()
    for i in range(200):
        (wide / f"{TEMP_PREFIX}0000{i:04d}-x").write_bytes(b"orphan")
    odd = [
        b"new\nline",
        b"\x1b[31mred",
        b"\xff\xfe not utf-8",
        "rlo\u202etxt".encode(),
        b"x" * 255,
        b" ",
        b"-rf",
    ]
    base = os.fsencode(tmp_path)
    for name in odd:
        os.mkdir(base + b"/" + name)
        with open(base + b"/" + name + b"/" + os.fsencode(ORPHAN), "wb") as out:
            out.write(b"orphan")
    # a folder that merely looks like a temp file is walked into, not removed
    (tmp_path / f"{TEMP_PREFIX}folder").mkdir()
    (tmp_path / f"{TEMP_PREFIX}folder" / ORPHAN).write_bytes(b"orphan")
    result = LocalBackend("a", tmp_path).cleanup_orphans()
    assert result.removed == 200 + len(odd) + 1
    assert len(os.listdir(wide)) == 3000
    for name in odd:
        assert os.listdir(base + b"/" + name) == []
    assert (tmp_path / f"{TEMP_PREFIX}folder").is_dir()


def test_links_fifos_and_outside_are_left_alone(tmp_path: Path) -> None:
    area = tmp_path / "area"
    outside = tmp_path / "outside"
    area.mkdir()
    outside.mkdir()
    (outside / ORPHAN).write_bytes(b"not ours")
    os.symlink(outside, area / "out")  # a folder link leaving the area
    os.symlink(outside / ORPHAN, area / ORPHAN)  # a link named like an orphan
    os.symlink(".", area / "loop")
    os.mkfifo(area / f"{TEMP_PREFIX}fifo")
    result = LocalBackend("a", area).cleanup_orphans()
    assert result.removed == 0
    assert (outside / ORPHAN).read_bytes() == b"not ours"
    assert os.path.islink(area / ORPHAN)
    assert (area / f"{TEMP_PREFIX}fifo").exists()


def test_live_upload_of_this_process_survives_the_sweep(tmp_path: Path) -> None:
    backend = LocalBackend("a", tmp_path)
    (tmp_path / ORPHAN).write_bytes(b"orphan")

    async def scenario() -> None:
        handle = await backend.open_write(("live.bin",))
        await handle.write(0, b"first half ")
        assert backend.cleanup_orphans().removed == 1
        await handle.write(11, b"second half")
        await handle.commit()

    asyncio.run(scenario())
    assert (tmp_path / "live.bin").read_bytes() == b"first half second half"
    assert not (tmp_path / ORPHAN).exists()


def test_folder_moved_during_the_sweep_stops_it(tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "z").mkdir()
    calls = 0

    def mover() -> bool:
        nonlocal calls
        calls += 1
        if calls == 4:  # standing in a/b/c: move a/b away under the walk
            os.rename(tmp_path / "a" / "b", tmp_path / "z" / "b")
        return False

    fd = os.open(tmp_path, FLAGS)
    try:
        result = sweep(fd, lambda name: False, stop=mover)
    finally:
        os.close(fd)
    assert result.stopped == "a folder was moved during the sweep"


def test_stop_request_ends_the_walk(tmp_path: Path) -> None:
    nest(tmp_path, 100)
    result = LocalBackend("a", tmp_path).cleanup_orphans(stop=lambda: True)
    assert result.stopped == "stop requested"
    assert ORPHAN in deepest(tmp_path, 100)


def test_unreadable_folder_is_skipped(tmp_path: Path) -> None:
    """As an unprivileged user (root reads every folder, so drop to nobody)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    base = Path(tempfile.mkdtemp(prefix="conduit-sweep-"))  # /tmp/pytest-of-root is 0700
    try:
        os.chmod(base, 0o755)
        area = base / "area"
        (area / "locked").mkdir(parents=True)
        (area / "open").mkdir()
        for folder in (area, area / "locked", area / "open"):
            (folder / ORPHAN).write_bytes(b"x")
        for path in (area, area / "open", area / ORPHAN, area / "open" / ORPHAN):
            os.chown(path, 65534, 65534)
        os.chmod(area / "locked", 0o700)  # root's: nobody can neither list nor enter it
        script = (  # import first: root's Python is not readable by nobody
            "import os, json, sys, pathlib; from conduit.storage import LocalBackend;"
            "os.setgid(65534); os.setuid(65534);"
            "r = LocalBackend('a', pathlib.Path(sys.argv[1])).cleanup_orphans();"
            "print(json.dumps([r.removed, r.unreadable, r.stopped]))"
        )
        src = Path(__file__).resolve().parents[2] / "src"
        done = subprocess.run(
            [sys.executable, "-c", script, str(area)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(src)},
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [2, 1, None]
        assert (area / "locked" / ORPHAN).exists()
        assert not (area / "open" / ORPHAN).exists()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)
