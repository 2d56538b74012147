from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.errors import Fault, StorageError
from conduit.storage.relay.commands import check_template, render
from conduit.storage.relay.custody import OrderedHasher, compare, parse_sha256_output
from conduit.storage.relay.scp import parse_listing


def test_in_order_hash() -> None:
    hasher = OrderedHasher()
    hasher.feed(0, b"abc")
    hasher.feed(3, b"def")
    assert hasher.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


# (st.permutations, not st.randoms: hypothesis imports the latter's module lazily,
# mid-suite, and Debian's Python 3.11.2 then sometimes fails to parse it for
# pytest's assertion rewriting: "AST constructor recursion depth mismatch", a
# CPython 3.11 bug, python/cpython#106905 and pytest-dev/pytest#10763)
@given(st.lists(st.binary(min_size=1, max_size=50), max_size=20), st.data())
def test_reordered_writes_hash_like_the_file(chunks: list[bytes], data: st.DataObject) -> None:
    offsets = []
    pos = 0
    for chunk in chunks:
        offsets.append((pos, chunk))
        pos += len(chunk)
    offsets = data.draw(st.permutations(offsets))
    hasher = OrderedHasher()
    for offset, chunk in offsets:
        hasher.feed(offset, chunk)
    assert hasher.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_rewrite_and_gaps_refused() -> None:
    hasher = OrderedHasher()
    hasher.feed(0, b"abc")
    with pytest.raises(StorageError):
        hasher.feed(1, b"x")
    hasher = OrderedHasher()
    hasher.feed(10, b"x")
    with pytest.raises(StorageError):
        hasher.hexdigest()
    hasher = OrderedHasher(window=4)
    with pytest.raises(StorageError):
        hasher.feed(10, b"12345")


def test_sha256_output() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert parse_sha256_output(f"{digest}  /a/b\n".encode()) == digest
    assert parse_sha256_output(f"\\{digest.upper()}  /a\\nb\n".encode()) == digest
    for bad in (b"", b"sha256sum: /x: No such file\n", b"abc  x\n", (digest + "0").encode()):
        with pytest.raises(StorageError):
            parse_sha256_output(bad)


@pytest.mark.parametrize("template", ["sha256sum -- {path}", "openssl dgst -sha256 -r -- {path}"])
@pytest.mark.parametrize("name", ["plain.bin", "new\nline.bin", "back\\slash.bin", "-x $(id).bin"])
def test_the_documented_hash_commands_are_read_right(
    tmp_path: Path, template: str, name: str
) -> None:
    """Both commands docs/relay.md names, run for real on awkward names: the
    digest read from their output is the file's (GNU tools escape a name with
    a newline or a backslash and put a backslash before the digest)."""
    target = tmp_path / name
    target.write_bytes(b"firmware \x00\xff" * 1000)
    command = render("sha256", template, path=str(target))
    out = subprocess.run(command, shell=True, capture_output=True, check=True).stdout
    assert parse_sha256_output(out) == hashlib.sha256(target.read_bytes()).hexdigest()


def test_compare() -> None:
    assert compare("a" * 64, "a" * 64, "command").device_sha256 == "a" * 64
    with pytest.raises(StorageError) as info:
        compare("a" * 64, "b" * 64, "read-back")
    assert info.value.fault is Fault.FAILURE
    assert info.value.reason == "device copy does not match"


@pytest.mark.parametrize(
    "path", ["/r/a;touch x", "/r/$(id)", "/r/`id`", "/r/it's", '/r/"q"', "/r/-rf", "/r/a b"]
)
def test_render_quotes_every_path(path: str) -> None:
    command = render("rename", "mv -- {old} {new}", old=path, new=path + ".2")
    assert shlex.split(command) == ["mv", "--", path, path + ".2"]


@pytest.mark.parametrize(
    ("operation", "template"),
    [
        ("rename", "mv {path}"),
        ("delete", "rm {path.__class__}"),
        ("delete", "rm {path!r}"),
        ("delete", "rm {path:>10}"),
        ("delete", "rm {0}"),
        ("format", "mkfs {path}"),
    ],
)
def test_bad_templates(operation: str, template: str) -> None:
    with pytest.raises(ValueError):
        check_template(operation, template)


def test_listing_parser() -> None:
    out = b"f 3 1700000000.5 a b\0d 4096 1700000001 sub\0l 1 1 link\0"
    entries = parse_listing(out)
    assert [e.name for e in entries] == ["a b", "link", "sub"]
    assert entries[0].stat.is_file and entries[0].stat.size == 3
    assert entries[2].stat.is_dir
    with pytest.raises(StorageError):
        parse_listing(b"garbage\0")
