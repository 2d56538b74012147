"""The one name rule and the one escape, by table and by property."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.gateway.vfs import ROOT, BadPath, resolve
from conduit.names import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    BadName,
    _check_each,
    check_name,
    check_path,
    escape,
    has_controls,
    is_valid_name,
)

REFUSED = [
    "",
    ".",
    "..",
    "a/b",
    "nul\0",
    "esc\x1b[31mRED\x1b[0m.txt",
    "cr\rfake.txt",
    "lf\nx",
    "bell\a",
    "\x01start",
    "dir\x1b]0;pwned\x07",
    "del\x7f",
    "c1\x85x",
    "csi\x9b31m",
    "rlo\u202etxt.exe",
    "lre\u202ax",
    "pdf\u202cx",
    "lri\u2066x",
    "pdi\u2069x",
    "lrm\u200e.txt",
    "rlm\u200f.txt",
    "alm\u061c.txt",
    "ls\u2028x",
    "ps\u2029x",
    "surrogate\udcff",
    "zwsp\u200b.bin",
    "bom\ufeff",
    "soft\u00adhyphen",
    "word\u2060joiner",
    "tag\U000e0041",
    "annotation\ufff9x\ufffb",
    "a" * (MAX_NAME_BYTES + 1),
    "é" * 128,  # 256 bytes of UTF-8
]

ALLOWED = [
    "fw.bin",
    "with space.txt",
    "a" * MAX_NAME_BYTES,
    "é" * 127,
    "שלום.txt",  # Hebrew: the bidi algorithm lays it out without marks
    "تقرير.csv",
    "報告.txt",
    "persian\u200cjoiner",  # ZWNJ: needed by Persian
    "family\U0001f468\u200d\U0001f469",  # ZWJ emoji sequence
    "nbsp\u00a0name",
    "-rf",
    "$(id)",
    "...",
    ".hidden",
]


@pytest.mark.parametrize("name", REFUSED)
def test_refused(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(BadName):
        check_name(name)


@pytest.mark.parametrize("name", ALLOWED)
def test_allowed(name: str) -> None:
    assert check_name(name) == name


def test_path_limit_counts_utf8_bytes_as_shown() -> None:
    # "/" + 15 names of 254 bytes + "/" each is 15 * 255 = 3825; one more over 4096
    parts = tuple(["n" * 254] * 16)
    assert sum(1 + len(p) for p in parts) == 4080
    assert check_path(parts) == parts
    with pytest.raises(BadName, match="path too long"):
        check_path((*parts, "x" * 16))
    assert check_path((*parts, "x" * 15))


def test_child_obeys_the_rule() -> None:
    inbox = resolve("/inbox")
    assert inbox.child("ok.txt").text == "/inbox/ok.txt"
    for bad in ("cr\rx", "rlo\u202ex", "..", "a/b", ""):
        with pytest.raises(BadPath):
            inbox.child(bad)
    deep = ROOT
    with pytest.raises(BadPath, match="path too long"):
        for _ in range(100):
            deep = deep.child("d" * 200)
    assert len(deep.text.encode()) <= MAX_PATH_BYTES


@pytest.mark.parametrize("name", [n for n in REFUSED if "/" not in n and n not in ("", ".", "..")])
def test_resolve_refuses_what_the_rule_refuses(name: str) -> None:
    with pytest.raises(BadPath):
        resolve("/inbox/" + name)


@given(st.text(max_size=40))
def test_a_name_is_valid_exactly_when_it_has_no_control_slash_dot_or_excess(name: str) -> None:
    expected = (
        name not in ("", ".", "..")
        and "/" not in name
        and not has_controls(name)
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )
    assert is_valid_name(name) is expected


@given(st.text(max_size=60))
def test_escape_leaves_nothing_the_rule_refuses_and_is_unambiguous(text: str) -> None:
    shown = escape(text)
    assert not has_controls(shown)
    # Unambiguous: two different texts never show the same.
    assert escape(text + "\\x1b") != escape(text + "\x1b")


@given(st.text(max_size=60))
def test_escape_is_the_identity_on_valid_names_without_backslashes(text: str) -> None:
    if is_valid_name(text) and "\\" not in text:
        assert escape(text) == text


def test_escape_examples() -> None:
    assert escape("rlo\u202etxt.exe") == "rlo\\u202etxt.exe"
    assert escape("a\x1b[31m\r\n") == "a\\x1b[31m\\x0d\\x0a"
    assert escape("back\\slash") == "back\\\\slash"
    assert escape(b"\xff".decode("utf-8", "surrogateescape")) == "\\xff"
    assert escape(None) == ""


CONFIG = """\
[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[areas."rlo\\u202etxt"]
zone = "local"
path = "a"

[devices."plc\\u001b[31m"]
zone = "local"
address = "127.0.0.1:22"
user = "admin"
identity = "k"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4bA6gY0fEXH2J1cTfZb3y5jGZTbQb0Qn2d7s5U5cX"

[users."eve\\u200f"]
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKj4bA6gY0fEXH2J1cTfZb3y5jGZTbQb0Qn2d7s5U5cX e"]
roles = []
"""


def test_config_names_obey_the_same_rule() -> None:
    from conduit.config import parse
    from conduit.site.check import check

    problems = [p for p in check(parse(CONFIG), CONFIG) if p.severity == "error"]
    refused = [p for p in problems if "cannot be a name here" in p.message]
    assert len(refused) == 3, problems
    for problem in refused:
        assert not has_controls(problem.message)


def _outcome(check: Callable[[tuple[str, ...]], tuple[str, ...]], parts: tuple[str, ...]) -> str:
    try:
        return repr(check(parts))
    except BadName as exc:
        return f"refused: {exc}"


_HOSTILE = [
    "ok",
    "",
    ".",
    "..",
    "a/b",
    "/",
    "nul\x00",
    "esc\x1b[31m",
    "rlo\u202ex",
    "rlm\u200f.pdf",
    "zwsp\u200b",
    "lone\udcff",
    "line\u2028",
    "é" * 127,  # 254 bytes
    "é" * 128,  # 256 bytes
    "\U0001f600" * 63,  # 252 bytes, 63 characters
    "\U0001f600" * 64,  # 256 bytes, 64 characters
    "x" * 255,
    "x" * 256,
    "n" * 254,
]


@given(st.lists(st.sampled_from(_HOSTILE) | st.text(max_size=8), max_size=20))
def test_path_check_at_once_is_the_check_of_each_name(parts: list[str]) -> None:
    # check_path's quick look at the joined path answers as the check of each
    # component in order would: the same path back, or the same first reason.
    assert _outcome(check_path, tuple(parts)) == _outcome(_check_each, tuple(parts))


@pytest.mark.parametrize("count", [15, 16, 17])
@pytest.mark.parametrize("tail", ["x" * 15, "x" * 16, "é" * 8, "\U0001f600" * 4, "a\x00"])
def test_path_check_at_once_at_the_limits(count: int, tail: str) -> None:
    parts = (*["n" * 254] * count, tail)
    assert _outcome(check_path, parts) == _outcome(_check_each, parts)
