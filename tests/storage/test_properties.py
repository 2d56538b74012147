"""Properties: whatever path a client sends, nothing outside the area is reached."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from conduit.errors import StorageError
from conduit.storage import LocalBackend

from .conftest import LINKS, OUTSIDE_MTIME, SECRET, build_tree

COMPONENTS = sorted(
    {name.split("/")[-1] for name in LINKS}
    | {"docs", "sub", "readme.txt", "deep.txt", "top.txt", "out_abs_inside", "missing"}
    | {"..", ".", "", "a/b", "secret.txt", "outside", "dir"}
)
paths = hs.lists(hs.sampled_from(COMPONENTS), max_size=7).map(tuple)


@pytest.fixture(scope="module")
def tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as base:
        yield build_tree(Path(base))


def snapshot(directory: Path) -> dict[str, tuple[int, float, bytes]]:
    """Everything under ``directory`` without following links: mode, mtime, bytes."""
    info = directory.lstat()
    seen = {str(directory): (info.st_mode, info.st_mtime, b"")}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            seen[str(path)] = (info.st_mode, info.st_mtime, content)
    return seen


def inside_inodes(root: Path) -> set[tuple[int, int]]:
    found = {(root.stat().st_dev, root.stat().st_ino)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            info = (Path(dirpath) / name).lstat()
            found.add((info.st_dev, info.st_ino))
    return found


@settings(max_examples=300, deadline=None)
@given(path=paths)
def test_reads_never_reach_outside(tree: Path, path: tuple[str, ...]) -> None:
    async def attempt() -> None:
        backend = LocalBackend("p", tree)
        try:
            try:
                info = await backend.stat(path)
            except StorageError as error:
                assert str(tree.parent) not in error.detail
                return
            assert info.mtime != OUTSIDE_MTIME
            if info.is_dir:
                for entry in await backend.listdir(path):
                    assert entry.stat.mtime != OUTSIDE_MTIME
            elif info.is_file:
                handle = await backend.open_read(path)
                try:
                    opened = os.fstat(handle.fd)
                    assert (opened.st_dev, opened.st_ino) in inside_inodes(tree)
                    assert await handle.read(0, 1000) != SECRET
                finally:
                    await handle.close()
        finally:
            await backend.close()

    asyncio.run(attempt())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths, data=hs.binary(max_size=64))
def test_writes_never_land_outside(tmp_path: Path, path: tuple[str, ...], data: bytes) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as base:
        area = build_tree(Path(base))
        outside = Path(base) / "outside"
        before = snapshot(outside)

        async def attempt() -> None:
            backend = LocalBackend("p", area)
            try:
                try:
                    upload = await backend.open_write(path)
                    await upload.write(0, data)
                    await upload.commit()
                except StorageError:
                    pass
                for operation in (backend.mkdir, backend.remove, backend.rmdir):
                    with contextlib.suppress(StorageError):
                        await operation(path)
                with contextlib.suppress(StorageError):
                    await backend.rename(("top.txt",), path, overwrite=True)
            finally:
                await backend.close()

        asyncio.run(attempt())
        assert snapshot(outside) == before
