"""The journal's records come from a key order per shape (compose) instead of a
sort per record (build); the two must give the same dict, in the same order, and
so the same bytes on disk, whatever the values."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.audit import compose as compose_module
from conduit.audit.compose import compose
from conduit.audit.events import (
    GENESIS,
    RESERVED,
    EventType,
    build,
    check_event,
    clean_value,
    encode,
    encode_sorted,
)
from conduit.audit.recent import _plain

#: Hostile text first: controls, bidi marks, line separators, lone surrogates
#: (undecodable client bytes), quotes and backslashes, and a long value.
_HOSTILE = st.sampled_from(
    ["\x00", "\x1b[31m", "\r\n", "\u202e", "\u2028", "\udcff", "\ud800", '"', "\\", "é", "x" * 5000]
)
_TEXT = st.one_of(st.text(), st.lists(st.one_of(_HOSTILE, st.text()), max_size=6).map("".join))
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
    st.lists(_TEXT, max_size=3),
    _TEXT.map(lambda s: EventType.FILE_UPLOAD),  # a str subclass as a value
)
#: Field names, some sorting between and around the header keys, and some
#: clashing with them (build() lets the header win; compose must do the same).
_NAMES = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
    st.sampled_from(["seq", "ts", "node", "type", "outcome", "prev", "a", "z", "path", "zone"]),
)
_FIELDS = st.dictionaries(_NAMES, _VALUES, max_size=16)


def both(fields, seq=7, ts="2026-12-03T18:00:00.000001Z", node="gw-1", type_="file.upload"):
    args = (seq, ts, node, type_, "success", fields, GENESIS)
    return compose(*args), build(*args)


@given(_FIELDS, st.integers(min_value=1), _TEXT, _TEXT)
def test_compose_is_build_in_value_order_and_bytes(fields, seq, ts, node):
    composed, built = both(fields, seq, ts, node)
    assert composed == built
    assert list(composed) == list(built) == sorted(built)
    assert encode_sorted(composed) == encode_sorted(built) == encode(built)
    # a second record of the same shape takes the remembered order: still equal
    again, built_again = both(dict(fields), seq + 1, ts, node)
    assert list(again) == list(built_again) and again == built_again


@given(_FIELDS)
def test_field_order_of_the_call_does_not_change_the_record(fields):
    backwards = dict(reversed(list(fields.items())))
    assert list(both(backwards)[0]) == list(both(fields)[0])
    assert encode_sorted(both(backwards)[0]) == encode_sorted(both(fields)[0])


def test_a_str_subclass_name_takes_the_general_path(monkeypatch):
    monkeypatch.setattr(compose_module, "_SHAPES", {})

    class Name(str):
        pass

    composed, built = both({Name("path"): "v", "a": 1})
    assert list(composed) == list(built) and encode_sorted(composed) == encode_sorted(built)
    assert compose_module._SHAPES == {}  # not remembered: an equal plain name may follow
    assert type(next(k for k in composed if k == "path")) is Name  # build()'s dict


def test_shapes_are_bounded(monkeypatch):
    monkeypatch.setattr(compose_module, "SHAPES_MAX", 8)
    monkeypatch.setattr(compose_module, "_SHAPES", {})
    for i in range(50):
        composed, built = both({f"f{i}": i})
        assert composed == built and list(composed) == list(built)
        assert len(compose_module._SHAPES) <= 8


@given(_FIELDS)
def test_kept_only_when_parsing_gives_the_same_types(fields):
    """recent._plain's fast check must agree with its field-by-field one."""
    record = build(3, "t", "n", "file.upload", "success", fields, GENESIS)
    exact = {str, int, float, bool, type(None)}
    expected = all(
        type(v) in exact or (type(v) is list and all(type(s) is str for s in v))
        for v in record.values()
    )
    assert _plain(record) is expected


@pytest.mark.parametrize(
    "record",
    [
        {"a": ("t",)},
        {"a": EventType.FILE_UPLOAD},
        {"a": ["x", EventType.FILE_UPLOAD]},
        {1: "x"},
        {EventType.FILE_UPLOAD: "x"},
    ],
)
def test_what_parses_back_differently_is_not_plain(record):
    assert not _plain(record)


_ANY_VALUE = st.one_of(
    _VALUES,
    st.binary(max_size=8),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.tuples(_TEXT),
    st.integers().map(lambda i: i > 0),
)


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), _ANY_VALUE))
def test_check_event_cleans_every_value_as_clean_value_does(fields):
    """check_event skips clean_value's call for a plain str or int: it must still
    give what cleaning each field gives, and never let a value through uncleaned."""
    fields = {k: v for k, v in fields.items() if k not in RESERVED}
    for skip_none in (False, True):
        want = {k: clean_value(v) for k, v in fields.items() if not (skip_none and v is None)}
        for _ in range(2):  # names unknown, then known
            got = check_event("file.upload", "success", fields, skip_none=skip_none)
            assert got == want and list(got) == list(want)
            assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
            line = encode(build(1, "t", "n", "a.b", "success", got, GENESIS))
            assert line == encode(build(1, "t", "n", "a.b", "success", want, GENESIS))


@pytest.mark.parametrize("bad", ["seq", "Bad-Name", "x" * 65, "é"])
def test_a_bad_name_is_refused_even_among_known_names(bad):
    known = {"path": "/a", "bytes": 1}
    check_event("file.upload", "success", known)
    with pytest.raises(ValueError):
        check_event("file.upload", "success", {**known, bad: "v"})
