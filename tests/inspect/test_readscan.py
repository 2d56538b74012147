"""``on_read = "scan"`` without a gateway: the verdict cache, the config rule,
and :func:`conduit.inspect.readscan.clear` over the test-only stream check."""

from __future__ import annotations

import asyncio
import json
import os
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
    cache.put("aa" * 32, "clamd 1", PASSED, now=1000.0)
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
            "INSERT INTO read_verdicts VALUES (?, ?, ?, ?)",
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
