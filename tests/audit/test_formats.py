import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conduit.audit.events import GENESIS, build, clean_value, decode, encode
from conduit.audit.formats import cef, octet_counted, parse_cef, parse_rfc5424, rfc5424
from conduit.names import has_controls

HOSTILE = [
    "alice",
    "a|b=c\\d",
    "line\r\nCEF:0|Evil|x|1|y|z|10|suser=root",
    "\x1b[2J\x1b[31mred",
    "tab\tand\x00nul",
    "ends with backslash\\",
    "= leading equals",
    "key=value other=thing",
    "ünïcødé ☃ 日本",
    "\u2028\u2029\x85",
    ']"[',
    b"\xff\xfe invalid utf8".decode("utf-8", "surrogateescape"),
    "invoice\u202etxt.exe \u2066isolate\u2069 \u200emark \x9b31m",
]


def rec(**fields):
    # through the journal encoding, as sinks see it
    return decode(
        encode(
            build(
                42, "2026-11-24T10:42:03.123456Z", "gw-1", "file.upload", "success", fields, GENESIS
            )
        )
    )


@pytest.mark.parametrize("name", HOSTILE)
def test_cef_round_trips_hostile_names(name):
    r = rec(
        principal=name,
        path=f"/fw/{name}",
        source="10.10.0.5",
        zone="enterprise",
        user_given=name,
        device=name,
        bytes=123,
        duration=1.5,
    )
    line = cef(r)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert not has_controls(line)  # bidi controls and marks too (Trojan Source)
    header, ext = parse_cef(line)
    assert header == [
        "CEF:0",
        "Conduit",
        "Conduit Gateway",
        header[3],
        "file.upload",
        "file.upload success",
        "3",
    ]
    assert ext["suser"] == name
    assert ext["duser"] == name
    assert ext["filePath"] == f"/fw/{name}"
    assert ext["src"] == "10.10.0.5"
    assert ext["externalId"] == "42"
    assert ext["cs1Label"] == "sourceZone" and ext["cs1"] == "enterprise"
    assert ext["fsize"] == "123" and ext["cfp1"] == "1.5"
    assert json.loads(ext["cs6"])["device"] == name


@pytest.mark.parametrize("name", HOSTILE)
def test_rfc5424_keeps_frame_and_record(name):
    r = rec(principal=name, path=name)
    msg = rfc5424(r)
    assert b"\n" not in msg and b"\r" not in msg
    pri, sd, back = parse_rfc5424(msg)
    assert pri == 13 * 8 + 6
    assert sd == '[conduit@32473 seq="42" type="file.upload" outcome="success"]'
    assert back == r
    framed = octet_counted(msg)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(msg)


text_or_bytes = st.one_of(st.text(), st.binary().map(clean_value))


@pytest.mark.parametrize(
    "path",
    ["\U000e0000", "tag\U000e0041s", "\U0001f600 \u202e", "bad\udcff\U000e0001byte"],
    ids=["tag-zero", "tag-letter", "emoji-and-bidi", "astral-after-bad-byte"],
)
def test_cef_escapes_characters_beyond_the_bmp_unambiguously(path):
    """A control beyond the BMP (Unicode tags, U+E0000...) was escaped with five hex
    digits, which parse_cef read back as four and a '0': a different name."""
    line = cef(rec(principal="alice", path=path))
    assert line.isascii() or "\U0001f600" in path  # an emoji is printable: kept as it is
    assert not has_controls(line)
    assert parse_cef(line)[1]["filePath"] == path


@settings(max_examples=300)
@given(text_or_bytes, text_or_bytes)
def test_cef_never_breaks(principal, path):
    r = rec(principal=principal, path=path, operation=principal)
    line = cef(r)
    assert "\n" not in line and "\r" not in line
    line.encode("utf-8")  # always valid UTF-8, even from invalid input
    _, ext = parse_cef(line)
    assert ext["suser"] == principal and ext["filePath"] == path
    assert json.loads(ext["cs6"])["operation"] == principal


@settings(max_examples=300)
@given(text_or_bytes)
def test_rfc5424_never_breaks(value):
    r = rec(principal=value, client_version=value)
    msg = rfc5424(r)
    assert b"\n" not in msg and b"\r" not in msg and b"\x00" not in msg
    assert parse_rfc5424(msg)[2] == r


def test_severity_follows_outcome():
    denied = decode(
        encode(
            build(1, "2026-11-24T10:42:03.123456Z", "gw", "access.denied", "denied", {}, GENESIS)
        )
    )
    assert parse_rfc5424(rfc5424(denied))[0] == 13 * 8 + 4
    assert parse_cef(cef(denied))[0][6] == "6"


def test_printusascii_shortcut_matches_the_rule_for_every_character():
    import re

    from conduit.audit.formats import _printusascii

    rule = re.compile(r"[^\x21-\x7e]")
    for code in range(0x3100):
        for text in (chr(code), f"a{chr(code)}b", f"{chr(code)}" * 3):
            for limit in (1, 2, 64):
                assert _printusascii(text, limit) == (rule.sub("_", text[:limit]) or "-")
    assert _printusascii("", 64) == "-"


@given(
    st.sampled_from(["file.upload", "audit.alert", "type with space", 't]"\\', "ü.x"]),
    st.sampled_from(["success", "failed", "denied", "intent", 'x"]']),
    st.one_of(st.just("gw-1"), st.text(max_size=20)),
    st.one_of(
        st.just("2026-12-03T10:00:00.000001Z"),
        st.text(max_size=30),
        st.text(alphabet=st.characters(codec="ascii"), min_size=60, max_size=70),  # around 64
    ),
    st.integers(min_value=1),  # decode() takes no other seq
    st.one_of(st.none(), st.just("alert"), st.text(max_size=5)),
)
def test_rfc5424_header_kept_per_type_is_the_header_made_afresh(
    type_, outcome, node, ts, seq, severity
):
    """The header parts kept per (type, outcome, node) give, with each record's time
    stamp and seq, the very bytes the long way gives, whatever the values."""
    from conduit.audit import formats

    record = {"seq": seq, "ts": ts, "node": node, "type": type_, "outcome": outcome}
    if severity is not None:
        record["severity"] = severity
    line = b'{"x":1}'
    fresh = formats._header(record, "conduit", seq).encode("ascii") + formats.BOM + line
    assert rfc5424(record, line=line) == fresh  # made (and kept) now
    assert rfc5424(record, line=line) == fresh  # from what was kept
    again = {**record, "seq": 7, "ts": "2026-12-03T10:00:01.000000Z"}
    fresh = formats._header(again, "conduit", 7).encode("ascii") + formats.BOM + line
    assert rfc5424(again, line=line) == fresh
