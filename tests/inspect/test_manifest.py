"""SHA256SUMS parsing: strict, explained, and never a guess."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.inspect.manifest import Manifest, ManifestError

A = hashlib.sha256(b"a").hexdigest()
B = hashlib.sha256(b"b").hexdigest()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (f"{A} rtu.bin\n", "not a checksum line"),  # one space
        (f"{A}\trtu.bin\n", "not a checksum line"),
        (f"{A}   rtu.bin\n", "spaces around"),
        (f"{A}  rtu.bin \n", "spaces around"),
        (f"{A[:-1]}  rtu.bin\n", "not a checksum line"),
        (f"{A}0  rtu.bin\n", "not a checksum line"),
        (f" {A}  rtu.bin\n", "not a checksum line"),
        (f"{A}  rtu\r.bin\n", "carriage return inside"),
        (f"{A}  rtu.bin\r\r\n", "carriage return inside"),
        (f"{A}  rtu\x1b.bin\n", "control character"),
        (f"{A}  rtu\u200e.bin\n", "control character"),
        (f"\\{A}  rtu\\nx.bin\n", "escaped names"),
        (f"{A}  fw/\n", "folder"),
        (f"{A}  ..\n", "folder"),
        (f"{A}  rtu.bin\n{B}  ./rtu.bin\n", "listed again with another hash (first on line 1)"),
        ("# only a comment\n\n", "lists no file"),
        ("", "lists no file"),
        (f"MD5 (rtu.bin) = {A}\n", "not a checksum line"),
    ],
)
def test_bad_manifests_are_rejected_with_the_line(data: str, why: str) -> None:
    with pytest.raises(ManifestError, match="SHA256SUMS") as caught:
        Manifest.parse(data.encode(), "SHA256SUMS")
    assert why in str(caught.value)


def test_not_utf8_is_rejected() -> None:
    with pytest.raises(ManifestError, match="not UTF-8"):
        Manifest.parse(f"{A}  r\xe9.bin\n".encode("latin-1"), "SHA256SUMS")


def test_the_accepted_forms() -> None:
    text = (
        "\ufeff# vendor list\r\n"
        f"{A}  rtu.bin\r\n"
        f"{B.upper()} *dist/plc.img\r\n"
        "\r\n"
        f"SHA256 (hmi update.tar) = {A}\n"
        f"{A}  rtu.bin\n"  # the same entry again: one entry
        f"{B}  caf\u00e9.bin"  # no final newline, non-ASCII name
    )
    manifest = Manifest.parse(text.encode(), "SHA256SUMS")
    assert manifest.entries == {
        "rtu.bin": A,
        "plc.img": B,
        "hmi update.tar": A,
        "caf\u00e9.bin": B,
    }
    assert manifest.lookup("/fw/rtu.bin", A).matches
    wrong = manifest.lookup("/fw/rtu.bin", B)
    assert wrong.listed and not wrong.matches and B in wrong.note
    assert not manifest.lookup("/fw/other.bin", A).listed


def test_names_that_differ_only_by_case_or_form_do_not_match_and_say_so() -> None:
    manifest = Manifest.parse(f"{A}  RTU.bin\n{B}  cafe\u0301.bin\n".encode())
    case = manifest.lookup("rtu.bin", A)
    assert not case.listed and "only in case" in case.note
    form = manifest.lookup("caf\u00e9.bin", B)
    assert not form.listed and "Unicode form" in form.note


def test_a_dot_sha256_file_may_hold_the_bare_hash() -> None:
    assert Manifest.parse(f"{A}\n".encode(), "fw/rtu.bin.sha256").lookup("rtu.bin", A).matches
    with pytest.raises(ManifestError):
        Manifest.parse(f"{A}\n".encode(), "SHA256SUMS")


names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cf", "Zl", "Zp", "Cs"), blacklist_characters="/\\"
    ),
    min_size=1,
    max_size=30,
).filter(lambda n: n == n.strip() and n not in (".", "..") and not n.startswith("#"))


@given(
    st.dictionaries(names, st.sampled_from([A, B]), min_size=1, max_size=8),
    st.booleans(),
    st.booleans(),
)
def test_what_sha256sum_writes_reads_back(
    entries: dict[str, str], crlf: bool, binary: bool
) -> None:
    end = "\r\n" if crlf else "\n"
    mark = "*" if binary else " "
    text = "".join(f"{h} {mark}{n}{end}" for n, h in entries.items())
    manifest = Manifest.parse(text.encode())
    assert manifest.entries == entries
    for name, digest in entries.items():
        assert manifest.lookup(f"/x/{name}", digest).matches


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        manifest = Manifest.parse(data)
    except ManifestError as exc:
        assert str(exc).startswith("manifest")
    else:
        assert manifest.entries
        assert all(len(h) == 64 and h == h.lower() for h in manifest.entries.values())
