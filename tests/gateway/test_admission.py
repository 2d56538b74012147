"""The admission rules (MaxStartups) as tables: pure bookkeeping, no sockets."""

from __future__ import annotations

import random
from ipaddress import ip_address

import pytest

from conduit.config.model import Startups
from conduit.gateway.admission import (
    EARLY_DROP,
    EVICTED,
    FULL,
    PER_SOURCE,
    Admission,
    source_key,
)


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dropped = False

    def drop(self) -> None:
        self.dropped = True

    def __repr__(self) -> str:
        return self.name


class Gate:
    def __init__(self, startups: Startups, per_source: int, seed: int = 1) -> None:
        self.admission = Admission(random.Random(seed))
        self.startups = startups
        self.per_source = per_source
        self.refusals: list[tuple[str, str]] = []

    def arrive(self, source: str, name: str = "") -> Conn | None:
        conn = Conn(name or source)
        ok = self.admission.admit(
            conn,
            ip_address(source),
            self.startups,
            self.per_source,
            lambda src, why: self.refusals.append((src, why)),
        )
        return conn if ok else None


def test_one_source_is_capped_and_others_still_get_in() -> None:
    gate = Gate(Startups(100, 30, 100), per_source=3)
    flood = [gate.arrive("127.0.0.3") for _ in range(50)]
    assert sum(c is not None for c in flood) == 3
    assert gate.refusals.count(("127.0.0.3", PER_SOURCE)) == 47
    assert gate.arrive("127.0.0.1") is not None
    assert not any(c.dropped for c in flood if c)


def test_a_source_with_nothing_waiting_is_never_gambled_with() -> None:
    gate = Gate(Startups(2, 100, 50), per_source=50)  # early drop certain for others
    for i in range(10):
        gate.arrive(f"10.0.0.{i}")  # one each: admitted below full
    assert len(gate.admission) == 10
    assert gate.arrive("10.0.0.1") is None  # has one waiting: dropped
    assert gate.refusals[-1] == ("10.0.0.1", EARLY_DROP)
    assert gate.arrive("10.0.0.99") is not None


def test_early_drop_rate_rises_from_start_to_full() -> None:
    def refused_share(waiting: int) -> float:
        refused = 0
        for seed in range(400):
            gate = Gate(Startups(10, 30, 100), per_source=1000, seed=seed)
            gate.arrive("10.0.0.1")
            for i in range(waiting - 1):  # first of their sources: always admitted
                assert gate.arrive(f"10.1.{i // 250}.{i % 250}") is not None
            refused += gate.arrive("10.0.0.1") is None
        return refused / 400

    assert refused_share(5) == 0
    assert 0.2 < refused_share(10) < 0.4  # 30 % at start
    assert 0.55 < refused_share(55) < 0.8  # 65 % half way
    assert refused_share(99) > 0.95


def test_full_drops_the_heaviest_sources_oldest_never_a_protected_one() -> None:
    gate = Gate(Startups(6, 0, 6), per_source=10)
    first = gate.arrive("127.0.0.3", "first")
    assert first is not None
    gate.admission.protect(first)  # it offered a valid key
    flood = [gate.arrive("127.0.0.3", f"f{i}") for i in range(4)]
    user = gate.arrive("127.0.0.1", "user")
    assert user is not None and len(gate.admission) == 6
    newcomer = gate.arrive("127.0.0.2", "newcomer")
    assert newcomer is not None
    assert not first.dropped and flood[0] is not None and flood[0].dropped
    assert gate.refusals[-1] == ("127.0.0.3", EVICTED)
    assert not user.dropped


def test_full_of_single_connections_refuses_the_newcomer() -> None:
    gate = Gate(Startups(4, 0, 4), per_source=10)
    waiting = [gate.arrive(f"10.0.0.{i}") for i in range(4)]
    assert gate.arrive("10.0.0.9") is None
    assert gate.refusals == [("10.0.0.9", FULL)]
    assert not any(c.dropped for c in waiting if c)


def test_leaving_frees_the_slot() -> None:
    gate = Gate(Startups(10, 30, 10), per_source=1)
    conn = gate.arrive("127.0.0.3")
    assert conn is not None and gate.arrive("127.0.0.3") is None
    gate.admission.leave(conn)
    gate.admission.leave(conn)  # twice is harmless
    assert gate.arrive("127.0.0.3") is not None
    assert gate.admission.from_source("127.0.0.3") == 1


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
    ],
)
def test_source_key(address: str, key: str) -> None:
    assert source_key(ip_address(address)) == key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"10:30:100"', Startups(10, 30, 100)),
        ("64", Startups(64, 100, 64)),  # the old integer form keeps working
        ('"5:0:5"', Startups(5, 0, 5)),
    ],
)
def test_max_startups_forms(value: str, expected: Startups) -> None:
    from conduit.config import parse

    config = parse(f"[gateway.limits]\nmax_startups = {value}\n")
    assert config.gateway.limits.max_startups == expected


@pytest.mark.parametrize(
    "value", ['"10:30"', '"100:30:10"', '"1:130:5"', "0", '"a:b:c"', '"\u0661:2:3"', "true"]
)
def test_bad_max_startups_is_one_clear_error(value: str) -> None:
    from conduit.config import ConfigError, parse

    with pytest.raises(ConfigError) as refused:
        parse(f"[gateway.limits]\nmax_startups = {value}\n")
    assert "max_startups" in str(refused.value)
