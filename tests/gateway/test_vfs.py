"""The virtual root's pure path arithmetic, by table and by property."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.gateway.vfs import ROOT, BadPath, VirtualPath, resolve

CWD = VirtualPath(("inbox", "sub"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", "/"),
        (b"", "/inbox/sub"),
        (b".", "/inbox/sub"),
        (b"..", "/inbox"),
        (b"../..", "/"),
        (b"../../../../..", "/"),
        (b"/inbox/../../etc/passwd", "/etc/passwd"),
        (b"/../../../../etc/shadow", "/etc/shadow"),
        (b"//inbox///a//b/", "/inbox/a/b"),
        (b"/inbox/./x/../y", "/inbox/y"),
        (b"x.bin", "/inbox/sub/x.bin"),
        (b"~", "/"),
        (b"~/outbox/r.csv", "/outbox/r.csv"),
        (b"/inbox/..%2f..%2fetc", "/inbox/..%2f..%2fetc"),
        ("/inbox/é 中 file.bin".encode(), "/inbox/é 中 file.bin"),
        (b"/inbox/" + b"a" * 255, "/inbox/" + "a" * 255),
    ],
)
def test_resolves_inside_the_virtual_root(raw: bytes, expected: str) -> None:
    assert resolve(raw, CWD).text == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"/inbox/a\0b", "NUL"),
        (b"/inbox/\xff\xfe", "UTF-8"),
        (b"~root/.ssh", "home"),
        (b"/inbox/a\nb", "control"),
        (b"/inbox/a\rb", "control"),
        (b"/inbox/\x1b[31mred", "control"),
        (b"/inbox/" + b"a" * 256, "too long"),
        (b"/" + b"a/" * 2100, "too long"),
    ],
)
def test_rejects_paths_no_file_should_have(raw: bytes, reason: str) -> None:
    with pytest.raises(BadPath, match=reason):
        resolve(raw, CWD)


names = st.text(st.sampled_from("ab.-_/~é"), max_size=30)


@given(names, st.lists(st.sampled_from(["a", "b", ".", ".."]), max_size=6))
def test_never_climbs_above_root_and_matches_posix_normalisation(raw: str, cwd: list[str]) -> None:
    start = resolve("/" + "/".join(cwd))
    try:
        result = resolve(raw, start)
    except BadPath:
        return
    assert ".." not in result.parts and "." not in result.parts and "" not in result.parts
    if not raw.startswith("~"):
        joined = posixpath.normpath(posixpath.join(start.text, raw))
        # posixpath keeps a leading '//' and never climbs above '/', like us.
        assert result.text == "/" + joined.lstrip("/") or result.text == joined


def test_root_properties() -> None:
    assert ROOT.is_root and ROOT.top is None and ROOT.text == "/"
    path = resolve("/inbox/a/b")
    assert path.top == "inbox" and path.name == "b" and path.parent.text == "/inbox/a"
