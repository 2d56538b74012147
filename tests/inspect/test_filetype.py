"""True file type by libmagic, from the first bytes only, whatever the name."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from conduit.inspect.base import State, Verdict
from conduit.inspect.filetype import HEAD, TypeStream, allowed


async def judge(types: list[str], data: bytes, chunk: int = 1000) -> Verdict:
    stream = TypeStream(types)
    for at in range(0, len(data), chunk):
        await stream.feed(data[at : at + chunk])
    return await stream.finish()


async def test_a_shell_script_named_bin_is_refused_with_its_type() -> None:
    verdict = await judge(["application/octet-stream"], b"#!/bin/sh\nrm -rf /\n")
    assert verdict.state is State.FAILED
    assert verdict.reason == "type: text/x-shellscript not allowed"
    assert "application/octet-stream" in verdict.detail


async def test_a_real_executable_passes() -> None:
    elf = Path(shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen").read_bytes()
    # libmagic 5.44 calls a PIE binary a shared library; newer ones say x-pie-executable
    types = ["application/x-sharedlib", "application/x-pie-executable", "application/x-executable"]
    verdict = await judge(types, elf, 65536)
    assert verdict.state is State.PASSED, verdict.reason


async def test_gzip_and_wildcards() -> None:
    data = gzip.compress(b"firmware" * 1000)
    assert (await judge(["application/gzip"], data)).passed
    assert (await judge(["application/*"], data)).passed
    assert not (await judge(["text/*"], data)).passed


async def test_only_the_head_is_kept_and_is_enough() -> None:
    stream = TypeStream(["application/gzip"])
    await stream.feed(gzip.compress(b"x" * 10))
    for _ in range(100):
        await stream.feed(b"\0" * 65536)
    assert len(stream._head) == HEAD
    assert (await stream.finish()).passed


async def test_an_empty_file_has_a_type_of_its_own() -> None:
    verdict = await judge(["application/octet-stream"], b"")
    assert verdict.state is State.FAILED
    assert verdict.reason == "type: application/x-empty not allowed"


@pytest.mark.parametrize(
    ("mime", "patterns", "expected"),
    [
        ("text/plain", ["text/*"], True),
        ("text/plain", ["text/plai"], False),
        ("textual/plain", ["text/*"], False),
        ("application/gzip", ["*"], False),
        ("application/gzip", [], False),
    ],
)
def test_patterns(mime: str, patterns: list[str], expected: bool) -> None:
    assert allowed(mime, patterns) is expected


async def test_without_libmagic_the_type_check_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A machine without Debian's libmagic1: the gateway still starts, the
    check refuses every file through a conduit with ``types``, and ``conduit
    check`` says why before anyone uploads."""
    from conduit.config.load import parse
    from conduit.inspect import filetype
    from conduit.site.check import check

    monkeypatch.setitem(__import__("sys").modules, "magic", None)  # import fails
    monkeypatch.setattr(filetype, "_magic", None)
    assert filetype.unavailable() is not None
    verdict = await judge(["application/octet-stream"], b"\x7fELF" + bytes(100))
    assert verdict.state is State.FAILED
    assert verdict.reason == "type: cannot be determined"
    config = parse(
        "[zones.a]\nlevel = 4\n[zones.b]\nlevel = 1\n"
        '[[conduits]]\nname = "fw"\nfrom = "a"\nto = "b"\ntypes = ["application/gzip"]\n'
    )
    found = [str(p) for p in check(config)]
    assert any("conduits[0].types" in p and "libmagic1" in p for p in found), found
