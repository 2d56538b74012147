import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.audit.events import (
    GENESIS,
    build,
    check_event,
    clean_value,
    decode,
    digest,
    encode,
    encode_sorted,
)

HOSTILE = [
    "alice\r\nseq=1",
    "a|b=c\\d",
    "\x1b[31mred\x1b[0m",
    "ünïcødé ☃",
    "\x00nul",
    "\u2028line sep",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_on_one_ascii_line(value):
    rec = build(1, "t", "n", "file.upload", "success", {"path": value}, GENESIS)
    line = encode(rec)
    assert b"\n" not in line and b"\r" not in line and all(32 <= b < 127 for b in line)
    assert decode(line)["path"] == value


def test_invalid_utf8_is_kept_exactly():
    raw = b"fw-\xff\xfe.bin"
    value = clean_value(raw)
    rec = build(1, "t", "n", "file.upload", "success", {"path": value}, GENESIS)
    back = decode(encode(rec))["path"]
    assert back.encode("utf-8", "surrogateescape") == raw


@given(st.one_of(st.text(), st.binary()))
def test_any_input_is_one_line_and_round_trips(value):
    clean = clean_value(value)
    line = encode(build(5, "t", "n", "file.upload", "success", {"user_given": clean}, GENESIS))
    assert b"\n" not in line and b"\r" not in line
    assert decode(line)["user_given"] == clean


def test_canonical_and_hash_stable():
    a = encode({"b": 1, "a": 2})
    assert a == b'{"a":2,"b":1}'
    assert digest(a) == digest(json.dumps({"a": 2, "b": 1}, separators=(",", ":")).encode())


@pytest.mark.parametrize(
    ("type_", "outcome", "fields"),
    [
        ("nodot", "success", {}),
        ("file.upload", "ok", {}),
        ("file.upload", "success", {"seq": 3}),
        ("file.upload", "success", {"Bad-Name": 3}),
    ],
)
def test_programming_errors_are_refused(type_, outcome, fields):
    with pytest.raises(ValueError):
        check_event(type_, outcome, fields)


def _stdlib_encode(record):
    """What encode() was before its encoder was built once: the bytes on disk must not move."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


#: Every kind of value a record's field may hold.
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.lists(st.text(), max_size=3),
)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        _VALUES,
        max_size=12,
    )
)
def test_encode_is_byte_for_byte_the_stdlib_canonical_form(record):
    assert encode(record) == _stdlib_encode(record)


_FIELDS = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
        lambda k: k not in {"seq", "ts", "node", "type", "outcome", "prev"}
    ),
    _VALUES,
    max_size=16,
)


@given(_FIELDS)
def test_a_built_record_is_in_line_order_and_encodes_the_same_unsorted(fields):
    """The journal writes build()'s records with encode_sorted (no second sort):
    the bytes are the canonical form, and the dict is in the order parsing gives."""
    record = build(7, "t", "n", "file.upload", "success", fields, GENESIS)
    line = encode_sorted(record)
    assert line == _stdlib_encode(record)
    assert list(record) == list(decode(line)) == sorted(record)


def test_check_event_leaves_out_none_when_asked():
    fields = {"path": "/a", "zone": None, "bytes": 0}
    assert check_event("file.upload", "success", fields, skip_none=True) == {
        "path": "/a",
        "bytes": 0,
    }
    assert check_event("file.upload", "success", fields)["zone"] is None
    with pytest.raises(ValueError):  # a bad name is refused even with no value
        check_event("file.upload", "success", {"Bad-Name": 1, "x": None}, skip_none=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object()])
def test_encode_refuses_what_the_stdlib_refuses(bad):
    with pytest.raises((ValueError, TypeError)) as ours:
        encode({"x": bad})
    with pytest.raises((ValueError, TypeError)) as stdlib:
        _stdlib_encode({"x": bad})
    assert type(ours.value) is type(stdlib.value)


def test_utc_now_is_iso_utc_with_microseconds_and_current():
    from datetime import UTC, datetime

    from conduit.audit.events import utc_now

    before = datetime.now(UTC)
    stamp = utc_now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=0) <= when <= after
