"""The local backend on a real disk: a must-allow / must-reject table and properties."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.errors import Fault, StorageError
from conduit.storage import LocalBackend
from conduit.storage.local import TEMP_PREFIX


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """An area with escape hatches of every kind, and a secret outside it."""
    root = tmp_path / "area"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    root.mkdir()
    (root / "file.txt").write_text("inside")
    (root / "dir").mkdir()
    (root / "dir" / "deep.txt").write_text("deep")
    links = {
        "abs_out": str(outside / "secret"),
        "abs_in": str(root / "file.txt"),  # absolute, even when it points inside
        "rel_out": "../outside/secret",
        "dir/rel_out2": "../../outside/secret",
        "dangling_out": "../outside/nothing",
        "dangling_in": "nothing-here",
        "dir_out": "../outside",
        "loop1": "loop2",
        "loop2": "loop1",
        "self": "self",
        "rel_in": "file.txt",
        "dir/up_in": "../file.txt",
        "dir_in": "dir",
        "chain_in": "rel_in",
        "chain_out": "rel_out",
        "dot": ".",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    os.mkfifo(root / "fifo")
    return root


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def read_all(backend: LocalBackend, parts: tuple[str, ...]) -> bytes:
    handle = await backend.open_read(parts)
    try:
        return await handle.read(0, 1 << 20)
    finally:
        await handle.close()


MUST_ALLOW = {
    ("file.txt",): b"inside",
    ("dir", "deep.txt"): b"deep",
    ("rel_in",): b"inside",
    ("dir", "up_in"): b"inside",
    ("dir_in", "deep.txt"): b"deep",
    ("chain_in",): b"inside",
    ("dot", "file.txt"): b"inside",
}


@pytest.mark.parametrize("parts", sorted(MUST_ALLOW))
def test_must_allow(area: Path, parts: tuple[str, ...]) -> None:
    backend = LocalBackend("a", area)
    assert run(read_all(backend, parts)) == MUST_ALLOW[parts]


# What a listing hides answers as missing (NOT_FOUND), like a name that does not exist.
MUST_REJECT = [
    (("abs_out",), Fault.NOT_FOUND),
    (("abs_in",), Fault.NOT_FOUND),
    (("rel_out",), Fault.NOT_FOUND),
    (("dir", "rel_out2"), Fault.NOT_FOUND),
    (("dangling_out",), Fault.NOT_FOUND),
    (("dangling_in",), Fault.NOT_FOUND),
    (("dir_out", "secret"), Fault.NOT_FOUND),
    (("loop1",), Fault.NOT_FOUND),
    (("self",), Fault.NOT_FOUND),
    (("chain_out",), Fault.NOT_FOUND),
    (("fifo",), Fault.NOT_FOUND),
    (("dir",), Fault.IS_A_DIRECTORY),
    (("nope",), Fault.NOT_FOUND),
    (("file.txt", "x"), Fault.NOT_A_DIRECTORY),
    (("..", "outside", "secret"), Fault.FORBIDDEN),
    (("a/b",), Fault.FORBIDDEN),
    (("a\0b",), Fault.FORBIDDEN),
    (("x" * 256,), Fault.FAILURE),
]


@pytest.mark.parametrize(("parts", "fault"), MUST_REJECT)
def test_must_reject_read(area: Path, tmp_path: Path, parts: tuple[str, ...], fault: Fault) -> None:
    backend = LocalBackend("a", area)
    with pytest.raises(StorageError) as refused:
        run(asyncio.wait_for(read_all(backend, parts), 5))  # a FIFO must not hang
    assert refused.value.fault is fault
    for text in (refused.value.reason, refused.value.detail):
        assert str(tmp_path) not in text and "outside" not in text


@pytest.mark.parametrize(
    "parts",
    [
        ("abs_out",),
        ("rel_out",),
        ("dangling_out",),
        ("dir_out", "new"),
        ("rel_in",),
        ("dir",),
        ("fifo",),
        ("loop1", "x"),
        (TEMP_PREFIX + "x",),
    ],
)
def test_must_reject_write(area: Path, tmp_path: Path, parts: tuple[str, ...]) -> None:
    backend = LocalBackend("a", area)
    with pytest.raises(StorageError):
        run(backend.open_write(parts))
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret"]
    assert (tmp_path / "outside" / "secret").read_text() == "secret"


def test_listing_hides_specials_escapes_and_temp_files(area: Path) -> None:
    backend = LocalBackend("a", area)
    (area / f"{TEMP_PREFIX}abcd-upload").write_text("in flight")
    names = {e.name for e in run(backend.listdir(()))}
    assert names == {"file.txt", "dir", "rel_in", "dir_in", "chain_in", "dot"}


def test_upload_is_atomic(area: Path) -> None:
    backend = LocalBackend("a", area)
    data = os.urandom(200_000)

    async def scenario() -> None:
        handle = await backend.open_write(("file.txt",))
        await handle.write(0, data[:100_000])
        await handle.write(100_000, data[100_000:])
        # Before commit, the old file is intact and no new name is visible.
        assert (area / "file.txt").read_text() == "inside"
        assert "file.txt" in {e.name for e in await backend.listdir(())}
        await handle.commit()

    run(scenario())
    assert (
        hashlib.sha256((area / "file.txt").read_bytes()).digest() == hashlib.sha256(data).digest()
    )
    assert not [n for n in os.listdir(area) if n.startswith(TEMP_PREFIX)]


def test_abort_and_orphan_cleanup(area: Path) -> None:
    backend = LocalBackend("a", area)

    async def scenario() -> None:
        handle = await backend.open_write(("dir", "new.bin"))
        await handle.write(0, b"partial")
        await handle.abort()

    run(scenario())
    assert sorted(os.listdir(area / "dir")) == ["deep.txt", "rel_out2", "up_in"]
    (area / "dir" / f"{TEMP_PREFIX}dead-crash.bin").write_text("left by a crash")
    assert LocalBackend("a", area).cleanup_orphans().removed == 1
    assert not (area / "dir" / f"{TEMP_PREFIX}dead-crash.bin").exists()


def test_rename_no_clobber_and_overwrite(area: Path) -> None:
    backend = LocalBackend("a", area)
    (area / "other.txt").write_text("other")
    with pytest.raises(StorageError) as refused:
        run(backend.rename(("file.txt",), ("other.txt",), overwrite=False))
    assert refused.value.fault is Fault.EXISTS
    assert (area / "other.txt").read_text() == "other"
    run(backend.rename(("file.txt",), ("other.txt",), overwrite=True))
    assert (area / "other.txt").read_text() == "inside" and not (area / "file.txt").exists()


def test_remove_and_rmdir_refuse_the_wrong_kind(area: Path) -> None:
    backend = LocalBackend("a", area)
    with pytest.raises(StorageError) as refused:
        run(backend.remove(("dir",)))
    assert refused.value.fault is Fault.IS_A_DIRECTORY
    with pytest.raises(StorageError) as refused:
        run(backend.rmdir(("file.txt",)))
    assert refused.value.fault is Fault.NOT_A_DIRECTORY
    run(backend.remove(("rel_out",)))  # removing a link removes the link only
    assert not (area / "rel_out").is_symlink()


names = st.lists(
    st.sampled_from(
        [
            "file.txt",
            "dir",
            "deep.txt",
            "rel_in",
            "rel_out",
            "dir_in",
            "dir_out",
            "up_in",
            "dot",
            "loop1",
            "secret",
        ]
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names)
def test_anything_readable_is_inside(area: Path, tmp_path: Path, parts: list[str]) -> None:
    backend = LocalBackend("a", area)
    try:
        data = run(read_all(backend, tuple(parts)))
    except StorageError:
        return
    assert data in (b"inside", b"deep")


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_with_or_without_fsync(tmp_path: Path, durable: bool) -> None:
    backend = LocalBackend("a", tmp_path / "a", durable=durable)

    async def scenario() -> None:
        kept = await backend.open_write(("kept.bin",))
        await kept.write(0, b"complete")
        await kept.commit()
        dropped = await backend.open_write(("dropped.bin",))
        await dropped.write(0, b"partial")
        assert sorted(os.listdir(tmp_path / "a"))[0].startswith(TEMP_PREFIX)
        await dropped.abort()

    run(scenario())
    assert os.listdir(tmp_path / "a") == ["kept.bin"]
    assert (tmp_path / "a" / "kept.bin").read_bytes() == b"complete"
