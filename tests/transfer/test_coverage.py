"""What a download's record says when it was read out of order.

Hostile cases: a client scattering gaps to grow the tracked ranges without
bound, ranges past the end, overlaps and re-reads; a whole file read back
to front must not be recorded as "partial read", and a file with one byte
never sent must not be recorded as read whole.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.storage.local import LocalBackend
from conduit.transfer import Download, Outcome
from conduit.transfer.coverage import MAX_SPANS, Coverage
from tests.transfer.reports import Reports

SIZE = 512
spans = st.lists(st.tuples(st.integers(0, SIZE + 16), st.integers(0, 64)), max_size=40)


@given(upto=st.integers(0, SIZE), reads=spans)
def test_coverage_agrees_with_a_byte_map(upto: int, reads: list[tuple[int, int]]) -> None:
    served = bytearray(SIZE + 100)
    served[:upto] = b"\x01" * upto
    coverage = Coverage(upto)
    for start, length in reads:
        coverage.add(start, start + length)
        served[start : start + length] = b"\x01" * length
    assert coverage.whole(SIZE) == all(served[:SIZE])
    # merged: sorted, disjoint and not touching, so their count is the gaps'
    pairs = list(zip(coverage._starts, coverage._ends, strict=True))
    assert all(s < e for s, e in pairs)
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(pairs))


def test_scattered_gaps_are_bounded_and_never_read_as_whole() -> None:
    coverage = Coverage()
    for k in range(MAX_SPANS + 1):
        coverage.add(2 * k, 2 * k + 1)  # one byte, one gap
    assert coverage.lost and coverage._starts == []
    coverage.add(0, 10 * MAX_SPANS)  # every byte after all: still not known
    assert not coverage.whole(10)
    assert coverage.note(10) == "read out of order, too scattered to tell if whole"


def test_an_empty_range_or_file() -> None:
    coverage = Coverage()
    coverage.add(5, 5)
    coverage.add(7, 3)
    assert coverage._starts == []
    assert coverage.whole(0) and not coverage.whole(1)


@pytest.fixture
def area(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    return tmp_path / "a"


async def download(area: Path, data: bytes, offsets: list[tuple[int, int]]) -> Reports:
    (area / "f.bin").write_bytes(data)
    reports = Reports()
    handle = await LocalBackend("a", area).open_read(("f.bin",))
    down = Download(handle, transfer="t", path="/a/f.bin", report=reports)
    for offset, length in offsets:
        assert await down.read(offset, length) == data[offset : offset + length]
    await down.close()
    return reports


@pytest.mark.parametrize("block", [4096, 256 * 1024])  # read on the loop, read ahead
async def test_a_whole_file_read_back_to_front_is_not_a_partial_read(
    area: Path, block: int
) -> None:
    data = os.urandom(8 * block + 100)
    reads = [(0, block)] + [(k * block, block) for k in range(8, 0, -1)]  # then back to front
    (record,) = (await download(area, data, reads)).records
    assert record.outcome is Outcome.SUCCESS and record.sha256 is None
    assert record.error == "read out of order" and record.bytes == len(data)


@pytest.mark.parametrize("block", [4096, 256 * 1024])
async def test_one_byte_never_sent_is_a_partial_read(area: Path, block: int) -> None:
    data = os.urandom(8 * block)
    # front to back with a skip of one byte, then everything after it
    reads = [(0, 3 * block), (3 * block + 1, 5 * block)]
    (record,) = (await download(area, data, reads)).records
    assert record.sha256 is None and record.error == "partial read"
    assert record.bytes == len(data) - 1


async def test_a_scattered_reader_gets_the_note_that_says_it(area: Path) -> None:
    size = 4 * (MAX_SPANS + 8)
    reads = [(0, 2)] + [(4 * k, 2) for k in range(MAX_SPANS + 8, 0, -1)]
    (record,) = (await download(area, os.urandom(size), reads)).records
    assert record.sha256 is None
    assert record.error == "read out of order, too scattered to tell if whole"
