"""``on_read = "scan"`` without a gateway: the verdict cache, the config rule,
and :func:`conduit.inspect.readscan.clear` over the test-only stream check."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from conduit.config.model import ConduitConfig
from conduit.inspect import readscan
from conduit.inspect.base import State, Verdict
from conduit.state import StateDB
from tests.inspect.checks import Forbidden

PASSED = [Verdict("scan", State.PASSED, "scan: clean", "clamd: stream: OK", 0.5)]


class Known(Forbidden):
    """The test-only stream check, with an identity (as clamd's and libmagic's have)."""

    version = "v1"

    async def identity(self) -> str:
        return f"forbidden {self.version}"


def reader(data: bytes) -> readscan.Read:
    async def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    return read


@pytest.mark.parametrize(
    ("require", "types", "why"),
    [
        (["scan", "approval"], [], "approval can only be met by released bytes"),
        (["signature"], [], "signature can only be met by released bytes"),
        ([], [], "requires neither"),
    ],
)
def test_on_read_scan_is_refused_where_a_scan_cannot_meet_the_conduit(
    require: list[str], types: list[str], why: str
) -> None:
    raw = {"name": "c", "from": "a", "to": "b", "require": require, "types": types}
    with pytest.raises(ValidationError, match=why):
        ConduitConfig.model_validate(raw | {"on_read": "scan"})
    assert ConduitConfig.model_validate(raw).on_read == "released"
    with pytest.raises(ValidationError):
        ConduitConfig.model_validate(raw | {"on_read": "sometimes"})


def test_the_cache_answers_only_for_the_same_hash_checks_and_age(tmp_path: Path) -> None:
    cache = readscan.VerdictCache(StateDB.open(tmp_path), keep_for=100.0)
    cache.put("aa" * 32, "clamd 1", PASSED, now=1000.0, size=10)
    assert cache.get("aa" * 32, "clamd 1", now=1050.0) == (1000.0, PASSED)
    assert cache.get("bb" * 32, "clamd 1", now=1050.0) is None  # other bytes
    assert cache.get("aa" * 32, "clamd 2", now=1050.0) is None  # a new database
    assert cache.get("aa" * 32, "clamd 1", now=1101.0) is None  # too old
    off = readscan.VerdictCache(StateDB.open(tmp_path), keep_for=0.0)
    assert off.get("aa" * 32, "clamd 1", now=1050.0) is None


def test_a_failed_verdict_written_into_the_cache_clears_nothing(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    cache = readscan.VerdictCache(db, keep_for=100.0)
    row = [{"check": "scan", "state": "failed", "reason": "x", "detail": "", "duration": 0}]
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO read_verdicts (sha256, checks, at, verdicts) VALUES (?, ?, ?, ?)",
            ("aa" * 32, "k", 1000.0, json.dumps(row)),
        )
    assert cache.get("aa" * 32, "k", now=1001.0) is None


def test_clear_refuses_scans_caches_and_rescans(tmp_path: Path) -> None:
    cache = readscan.VerdictCache(StateDB.open(tmp_path), keep_for=100.0)
    evil = b"EVIL" + os.urandom(3000)
    with pytest.raises(readscan.Refused) as refused:
        asyncio.run(readscan.clear(reader(evil), len(evil), [Known()], cache))
    assert refused.value.verdict.reason == "magic: forbidden content"
    with pytest.raises(readscan.Refused):  # a refusal is never remembered
        asyncio.run(readscan.clear(reader(evil), len(evil), [Known()], cache))
    good = os.urandom(3 * readscan.CHUNK + 5)
    first = asyncio.run(readscan.clear(reader(good), len(good), [Known()], cache))
    again = asyncio.run(readscan.clear(reader(good), len(good), [Known()], cache))
    assert (first.cached, again.cached) == (False, True) and first.size == len(good)
    assert again.fields()["sha256_scanned"] == first.sha256
    assert again.fields()["inspected"] == "cached"
    newer = Known()
    newer.version = "v2"  # the scanner's database changed: scanned again
    assert not asyncio.run(readscan.clear(reader(good), len(good), [newer], cache)).cached
    # a check that cannot say who it is never reuses a verdict
    plain = asyncio.run(readscan.clear(reader(good), len(good), [Forbidden()], cache))
    assert not plain.cached


def counting(data: bytes, reads: list[int], flip_after: int | None = None) -> readscan.Read:
    """A reader that counts the bytes it serves; after ``flip_after`` bytes its
    file changes (one byte), as a device or a disk might between passes."""

    async def read(offset: int, length: int) -> bytes:
        served = sum(reads)
        body = data
        if flip_after is not None and served >= flip_after:
            body = bytes([data[0] ^ 1]) + data[1:]
        reads.append(min(length, len(body) - offset))
        return body[offset : offset + length]

    return read


class Recording(Known):
    def __init__(self) -> None:
        super().__init__()
        self.fed = b""

    async def feed(self, chunk: bytes) -> None:
        await super().feed(chunk)
        self.fed += chunk


def test_a_miss_reads_the_file_once_and_a_lookup_twice(tmp_path: Path) -> None:
    cache = readscan.VerdictCache(StateDB.open(tmp_path), keep_for=100.0)
    data = os.urandom(2 * readscan.CHUNK + 7)
    reads: list[int] = []
    first = asyncio.run(readscan.clear(counting(data, reads), len(data), [Known()], cache))
    assert not first.cached and sum(reads) == len(data)  # nothing to look up: one pass
    reads.clear()
    again = asyncio.run(readscan.clear(counting(data, reads), len(data), [Known()], cache))
    assert again.cached and sum(reads) == len(data)  # the lookup's hash, no scan
    # Same size, other bytes: a verdict might have matched, so hash, miss, scan.
    other = os.urandom(len(data))
    reads.clear()
    third = asyncio.run(readscan.clear(counting(other, reads), len(other), [Known()], cache))
    assert not third.cached and sum(reads) == 2 * len(other)
    # Another size, or checks that cannot say who they are: one pass.
    for stream, body in ((Known(), data + b"x"), (Forbidden(), data)):
        reads.clear()
        asyncio.run(readscan.clear(counting(body, reads), len(body), [stream], cache))
        assert sum(reads) == len(body)


def test_the_verdict_is_for_the_bytes_scanned_in_either_path(tmp_path: Path) -> None:
    cache = readscan.VerdictCache(StateDB.open(tmp_path), keep_for=100.0)
    data = os.urandom(readscan.CHUNK + 3)
    # One pass: the hash kept is of exactly what the check was fed.
    stream = Recording()
    one = asyncio.run(readscan.clear(counting(data, []), len(data), [stream], cache))
    assert stream.fed == data and one.sha256 == hashlib.sha256(data).hexdigest()
    # Two passes (a verdict for this size is kept now), another file changing
    # between them: the second pass's bytes are scanned, hashed and kept.
    other = os.urandom(len(data))
    changed = bytes([other[0] ^ 1]) + other[1:]
    stream = Recording()
    reads: list[int] = []
    flipping = counting(other, reads, flip_after=len(other))
    two = asyncio.run(readscan.clear(flipping, len(other), [stream], cache))
    assert not two.cached and sum(reads) == 2 * len(other)
    assert stream.fed == changed and two.sha256 == hashlib.sha256(changed).hexdigest()
    now = time.time()
    assert cache.get(hashlib.sha256(other).hexdigest(), "forbidden v1", now) is None
    assert cache.get(two.sha256, "forbidden v1", now) is not None


def test_a_cache_from_before_sizes_is_upgraded_and_still_answers(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    with db.transaction() as tx:  # the table as older gateways made it
        tx.execute(
            "CREATE TABLE read_verdicts (sha256 TEXT NOT NULL, checks TEXT NOT NULL,"
            " at REAL NOT NULL, verdicts TEXT NOT NULL, PRIMARY KEY (sha256, checks))"
        )
    data = os.urandom(1000)
    sha = hashlib.sha256(data).hexdigest()
    passed = [{"check": "magic", "state": "passed", "reason": "magic: ok", "detail": "",
               "duration": 0.1}]  # fmt: skip
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO read_verdicts VALUES (?, ?, ?, ?)",
            (sha, "forbidden v1", time.time(), json.dumps(passed)),
        )
    cache = readscan.VerdictCache(db, keep_for=100.0)
    readscan.VerdictCache(db, keep_for=100.0)  # a second opener finds the column there
    hit = asyncio.run(readscan.clear(reader(data), len(data), [Known()], cache))
    assert hit.cached  # a row without a size may be of any size: looked up
