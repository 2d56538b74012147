"""Which new connection may wait for its login, and which must go (MaxStartups).

A connection is *waiting* from accept until it authenticates. Waiting
connections are the cheap resource a flood takes: each costs the gateway a
handshake and a slot, and an attacker needs no key to hold one. The rules,
decided at accept time and in this order:

1. **Per source.** One address (an IPv6 /64) may hold at most
   ``max_startups_per_source`` waiting connections; its next one is refused.
   A flood from one address therefore only ever competes with itself.
2. **Full** (``max_startups`` *full* reached). The oldest waiting connection
   of the address holding the most, if it holds at least two more than the
   newcomer's address, is dropped to make room; otherwise the newcomer is
   refused. A connection that has offered a valid key is never dropped.
3. **Random early drop** (from *start* on). A newcomer whose address already
   has a connection waiting is refused with probability *rate* %, rising
   linearly to 100 % at *full* (OpenSSH's ``MaxStartups start:rate:full``).
   An address with nothing waiting -- a person logging in -- is not gambled
   with; only rule 2 can refuse it.

The old rule (drop the oldest waiting connection when full) let a fast flood
evict every real client before it could finish its handshake: 0 of 131 logins
succeeded under ~1,560 connections/s. Pure bookkeeping: no I/O; the caller
passes what to do with a connection that must go.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from conduit.auth.defender import source_key  # one source: an IPv4 address, an IPv6 /64
from conduit.config.model import Startups

#: Why a connection was dropped (the ``reason`` of ``connection.refused`` records).
PER_SOURCE = "too many unauthenticated connections from this address"
FULL = "unauthenticated connections at max_startups"
EVICTED = "dropped to make room: its address held the most unauthenticated connections"
EARLY_DROP = "random early drop (max_startups start:rate:full)"


class Waiting(Protocol):
    """A connection that has not authenticated yet."""

    def drop(self) -> None:
        """Close it now, without a word to the client."""


@dataclass
class _Entry:
    source: str
    protected: bool = False


class Admission:
    """The waiting connections, by source, oldest first."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._waiting: dict[Waiting, _Entry] = {}
        # per source, in arrival order (dicts keep insertion order)
        self._by_source: dict[str, dict[Waiting, None]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def from_source(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    def admit(
        self,
        conn: Waiting,
        address: IPv4Address | IPv6Address,
        startups: Startups,
        per_source: int,
        dropped: Callable[[str, str], None],
    ) -> bool:
        """Admit ``conn`` as waiting, or refuse it (False). ``dropped(source,
        reason)`` hears of every connection refused or dropped here; the
        caller closes a refused newcomer, this closes an evicted one."""
        source = source_key(address)
        mine = self.from_source(source)
        waiting = len(self._waiting)
        if mine >= per_source:
            dropped(source, PER_SOURCE)
            return False
        if waiting >= startups.full:
            victim = self._reclaim(mine)
            if victim is None:
                dropped(source, FULL)
                return False
            victim_source = self._waiting[victim].source
            self.leave(victim)
            victim.drop()
            dropped(victim_source, EVICTED)
        elif waiting >= startups.start and mine > 0:
            span = startups.full - startups.start
            chance = startups.rate + (100 - startups.rate) * (waiting - startups.start) / span
            if self._rng.random() * 100 < chance:
                dropped(source, EARLY_DROP)
                return False
        self._waiting[conn] = _Entry(source)
        self._by_source.setdefault(source, {})[conn] = None
        return True

    def _reclaim(self, newcomers: int) -> Waiting | None:
        """The oldest droppable connection of the heaviest source, if that
        source holds at least two more than the newcomer's."""
        heaviest: dict[Waiting, None] | None = None
        for conns in self._by_source.values():
            if heaviest is None or len(conns) > len(heaviest):
                heaviest = conns
        if heaviest is None or len(heaviest) < newcomers + 2:
            return None
        for conn in heaviest:
            if not self._waiting[conn].protected:
                return conn
        return None

    def protect(self, conn: Waiting) -> None:
        """``conn`` offered a valid key: never drop it to make room."""
        entry = self._waiting.get(conn)
        if entry is not None:
            entry.protected = True

    def leave(self, conn: Waiting) -> None:
        """``conn`` authenticated or closed: it no longer waits."""
        entry = self._waiting.pop(conn, None)
        if entry is None:
            return
        conns = self._by_source[entry.source]
        conns.pop(conn, None)
        if not conns:
            del self._by_source[entry.source]
