"""Per-source penalties: a source that keeps failing is refused at accept for a while.

Like OpenSSH's ``PerSourcePenalties``, but durable. Each connection that ends
without authenticating scores points against its *source* (an IPv4 address,
or an IPv6 /64): failed authentication, no attempt at all, the login grace
time running out, a broken SSH protocol, or more unauthenticated connections
at once than ``max_startups_per_source``. Scores decay (they halve every
``half_life``), so an honest user's occasional wrong key never adds up; a
source whose score reaches ``threshold`` is banned for ``ban_time``, and each
repeat ban lasts ``ban_growth`` times longer, up to ``max_ban_time``. The ban
history is forgotten ``forget_after`` after the last ban ended. Sources in
``allow`` are never scored.

Bans are per source, never per user name: an attacker elsewhere cannot lock a
user out by failing in their name.

What is where:

* the lookup at accept is one dict lookup (:meth:`Defender.banned`);
* scores live in memory; a ban writes its source's row at once (before the
  source is refused), a clean shutdown writes every score still worth keeping
  (so a restart does not reset a half-way attacker), a crash loses only scores
  below the threshold;
* ``conduit defender unban`` marks the row (``unbanned_by``); the gateway
  picks the mark up (:meth:`Defender.take_unbans`) when asked over its control
  socket, at start, and at most once a second while a banned source knocks,
  and journals the unban then.

The table has at most ``max_sources`` sources in memory; when it is full,
the lowest scores that are not banned are dropped first. If every tracked
source is banned, a new source is not tracked (fail open for the many rather
than refuse everyone), and a warning says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address, ip_network

from conduit.auth.bantable import SCHEMA, Row, describe, reasons_of
from conduit.config.auth import AuthConfig
from conduit.config.auth import Defender as Settings
from conduit.state import StateDB

log = logging.getLogger("conduit.auth")

Address = IPv4Address | IPv6Address

#: Below this a score is forgotten (it would take ~10 half-lives to get here from 1,000).
FORGOTTEN = 0.01
#: A score this close to the threshold reaches it: ``threshold`` offences in a
#: quick row have decayed a little by the last one, and must still ban (1 % is
#: what a score loses in ~9 s at the default half-life).
NEAR = 0.99


class Offence(StrEnum):
    """How a connection ended without authenticating (the names of the weights)."""

    AUTH_FAILED = "auth_failed"
    NO_AUTH = "no_auth"
    GRACE_EXPIRED = "grace_expired"
    PROTOCOL_ERROR = "protocol_error"
    STARTUPS_EXCEEDED = "startups_exceeded"


def active(auth: AuthConfig) -> bool:
    """The defender runs only for a policy with an ``[auth.defender]`` section
    that does not say ``enabled = false`` (a policy without ``[auth]`` behaves
    as before: nothing is ever banned)."""
    return "defender" in auth.model_fields_set and auth.defender.enabled


def source_key(address: Address) -> str:
    """What counts as one source: an IPv4 address, or an IPv6 /64 (a host in
    one site's subnet can use any of 2**64 addresses). The same grouping as
    admission's per-source limit."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(IPv6Network((address, 64), strict=False))
    return str(address)


def number(address: Address) -> int:
    """The source as one int, for the accept-time lookup (``str()`` of an
    address costs ~20 times more): an IPv4 address below 2**32, an IPv6 /64
    as its upper 64 bits above 2**64."""
    if isinstance(address, IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            return (int(address) >> 64) | (1 << 64)
        return int(mapped)
    return int(address)


def parse_source(text: str) -> str:
    """The source key of what a person typed (an address, or an IPv6 /64 as
    ``conduit defender list`` shows it); ValueError with a one-line reason."""
    text = text.strip()
    try:
        if "/" in text:
            network = ip_network(text, strict=False)
            if network.version == 6 and network.prefixlen == 64:
                return str(network)
            if network.version == 4 and network.prefixlen == 32:
                return str(network.network_address)
            raise ValueError
        return source_key(ip_address(text.split("%")[0]))
    except ValueError:
        shown = text if text.isprintable() and len(text) <= 64 else repr(text[:64])
        raise ValueError(
            f"{shown} is not an IP address (nor an IPv6 /64 as `conduit defender list` shows)"
        ) from None


@dataclass
class Source:
    """One source's standing."""

    key: str
    score: float = 0.0
    scored_at: float = 0.0
    bans: int = 0
    banned_until: float = 0.0
    last_ban: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)  # behind the score now
    ban_score: float = 0.0  # the score that earned the last ban
    banned_for: dict[str, int] = field(default_factory=dict)  # the reasons of the last ban

    def decayed(self, now: float, half_life: float) -> float:
        if self.score <= 0.0 or now <= self.scored_at:
            return self.score
        return float(self.score * 0.5 ** ((now - self.scored_at) / half_life))


@dataclass(frozen=True)
class Ban:
    """A ban just imposed (what ``defender.ban`` records)."""

    source: str
    score: float
    bans: int
    until: float
    duration: float
    reasons: str


@dataclass(frozen=True)
class Unban:
    """A ban lifted (what ``defender.unban`` records)."""

    source: str
    by: str
    until: float  # when the lifted ban would have ended; 0 if none was in force


class Defender:
    """The scores and bans of one gateway; ``db`` None keeps them in memory only."""

    def __init__(
        self,
        settings: Settings,
        db: StateDB | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._db = db
        self._clock = clock
        self._sources: dict[str, Source] = {}
        #: Banned sources (key and until when) by :func:`number`: the accept-time lookup.
        self._bans: dict[int, tuple[str, float]] = {}
        self._full_warned = False
        if db is not None:
            db.ensure(SCHEMA)
            self._load(db)

    # -- accept time --------------------------------------------------------------------

    def banned(self, address: Address) -> float | None:
        """Until when ``address``'s source is banned (Unix time), or None. O(1)."""
        ban = self.ban_of(address)
        return None if ban is None else ban[1]

    def ban_of(self, address: Address) -> tuple[str, float] | None:
        """``address``'s source and until when it is banned, or None. O(1)."""
        if not self._bans:
            return None
        n = number(address)
        ban = self._bans.get(n)
        if ban is None:
            return None
        if ban[1] <= self._clock():
            del self._bans[n]  # served its time; its history stays for escalation
            return None
        return ban

    def allowed(self, address: Address) -> bool:
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener's IPv4 client
        return any(address in network for network in self.settings.allow)

    # -- scoring ------------------------------------------------------------------------

    def penalise(self, address: Address, offence: Offence) -> Ban | None:
        """Score ``offence`` against ``address``'s source; the ban it earned, if any."""
        weight = float(getattr(self.settings, offence.value))
        if weight <= 0.0 or self.allowed(address):
            return None
        if self.banned(address) is not None:
            return None  # already banned (a connection admitted before the ban ends)
        key = source_key(address)
        now = self._clock()
        source = self._sources.get(key) or self._track(key)
        if source is None:
            return None
        source.score = source.decayed(now, self.settings.half_life) + weight
        source.scored_at = now
        source.reasons[offence.value] += 1
        if source.score < self.settings.threshold * NEAR:
            return None
        return self._ban(source, now)

    def _ban(self, source: Source, now: float) -> Ban:
        s = self.settings
        if source.banned_until and now - source.banned_until > s.forget_after:
            source.bans = 0  # a long good spell since the last ban ended: from ban_time again
        source.bans += 1
        growth = s.ban_growth ** min(source.bans - 1, 64)  # capped below anyway; no overflow
        duration = min(s.ban_time * growth, s.max_ban_time)
        ban = Ban(
            source.key,
            round(source.score, 2),
            source.bans,
            now + duration,
            duration,
            describe(source.reasons),
        )
        source.banned_until = ban.until
        source.last_ban = now
        source.ban_score = ban.score
        source.banned_for = dict(source.reasons)
        self._save([source])  # on disk before the source is refused
        self._bans[number(_first_address(source.key))] = (source.key, ban.until)
        source.score = 0.0  # it starts afresh when the ban ends; ``bans`` remembers
        source.reasons = Counter()
        return ban

    def _track(self, key: str) -> Source | None:
        if len(self._sources) >= self.settings.max_sources:
            self._prune()
            if len(self._sources) >= self.settings.max_sources:
                if not self._full_warned:
                    self._full_warned = True
                    log.warning(
                        "defender: %d sources tracked, all banned: new sources are not scored",
                        len(self._sources),
                    )
                return None
        self._full_warned = False
        source = Source(key)
        self._sources[key] = source
        return source

    def _prune(self) -> None:
        """Drop the lowest-scored sources not banned, down to 3/4 of the cap
        (amortised: one sort per max_sources/4 new sources)."""
        now = self._clock()
        keep = self.settings.max_sources * 3 // 4
        banned = {key for key, _ in self._bans.values()}
        free = [s for s in self._sources.values() if s.key not in banned]
        free.sort(key=lambda s: (s.decayed(now, self.settings.half_life), s.last_ban))
        excess = len(self._sources) - keep
        for source in free[: max(excess, 0)]:
            del self._sources[source.key]

    # -- unbans ---------------------------------------------------------------------------

    def take_unbans(self) -> list[Unban]:
        """Bans lifted by ``conduit defender unban`` since the last call: applied
        here and unmarked in the table (the caller journals them)."""
        if self._db is None:
            return []
        rows = self._db.query(
            "SELECT source, unbanned_by FROM defender_sources WHERE unbanned_by IS NOT NULL"
        )
        unbans = []
        for row in rows:
            key, by = str(row["source"]), str(row["unbanned_by"])
            _, until = self._bans.pop(number(_first_address(key)), (key, 0.0))
            self._sources.pop(key, None)
            unbans.append(Unban(key, by, until))
        if rows:
            with self._db.transaction() as db:
                db.executemany(
                    "UPDATE defender_sources SET unbanned_by = NULL WHERE source = ?",
                    [(u.source,) for u in unbans],
                )
        return unbans

    def configure(self, settings: Settings) -> list[Unban]:
        """New settings (a reload); bans of sources the allow-list now covers end."""
        self.settings = settings
        lifted = []
        for n, (key, until) in list(self._bans.items()):
            if self.allowed(_first_address(key)):
                del self._bans[n]
                self._sources.pop(key, None)
                lifted.append(Unban(key, "allow-list", until))
        if lifted and self._db is not None:
            with self._db.transaction() as db:
                db.executemany(
                    "DELETE FROM defender_sources WHERE source = ?", [(u.source,) for u in lifted]
                )
        return lifted

    # -- durable state ----------------------------------------------------------------------

    def save(self) -> None:
        """Clean shutdown: write every source still worth remembering (a score
        not yet forgotten, a ban in force, a ban history not yet forgotten)."""
        if self._db is None:
            return
        now = self._clock()
        keep = [s for s in self._sources.values() if self._worth_keeping(s, now)]
        self._save(keep, replace=True)

    def _worth_keeping(self, source: Source, now: float) -> bool:
        s = self.settings
        return (
            source.banned_until > now
            or source.decayed(now, s.half_life) >= FORGOTTEN
            or (source.banned_until > 0 and now - source.banned_until <= s.forget_after)
        )

    def _save(self, sources: Iterable[Source], *, replace: bool = False) -> None:
        """Upsert ``sources``; ``replace``: they are all there is (the rest
        goes), in the same transaction, so a crash halfway loses no ban."""
        if self._db is None:
            return
        rows = [
            (
                s.key,
                s.score,
                s.scored_at,
                s.bans,
                s.banned_until,
                s.last_ban,
                s.ban_score,
                json.dumps(s.banned_for, sort_keys=True),
            )
            for s in sources
        ]
        with self._db.transaction() as db:
            if replace:
                db.execute("DELETE FROM defender_sources WHERE unbanned_by IS NULL")
            # A row `conduit defender unban` marked is left as it is: the
            # unban wins, and take_unbans applies it.
            db.executemany(
                "INSERT INTO defender_sources (source, score, scored_at, bans, banned_until, "
                "last_ban, ban_score, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(source) DO UPDATE SET score = excluded.score, "
                "scored_at = excluded.scored_at, bans = excluded.bans, "
                "banned_until = excluded.banned_until, last_ban = excluded.last_ban, "
                "ban_score = excluded.ban_score, reasons = excluded.reasons "
                "WHERE defender_sources.unbanned_by IS NULL",
                rows,
            )

    def _load(self, db: StateDB) -> None:
        now = self._clock()
        for row in db.query("SELECT * FROM defender_sources WHERE unbanned_by IS NULL"):
            source = Source(
                str(row["source"]),
                float(row["score"]),
                float(row["scored_at"]),
                int(row["bans"]),
                float(row["banned_until"]),
                float(row["last_ban"]),
                ban_score=float(row["ban_score"]),
                banned_for=reasons_of(row["reasons"]),
            )
            if not self._worth_keeping(source, now):
                continue
            if source.banned_until > now:
                self._bans[number(_first_address(source.key))] = (source.key, source.banned_until)
            self._sources[source.key] = source
            if len(self._sources) >= self.settings.max_sources:
                break

    def sources(self) -> list[Source]:
        """Every tracked source (a copy, for tests and the console)."""
        return list(self._sources.values())

    def live(self, limit: int = 1000) -> list[Row]:
        """The sources as this gateway holds them now (decayed scores, bans in
        force first, then the highest scores), at most ``limit``."""
        now, half_life = self._clock(), self.settings.half_life
        found = []
        for s in self._sources.values():
            banned = s.banned_until > now and self.ban_of(_first_address(s.key)) is not None
            score = s.decayed(now, half_life)
            if not banned and not self._worth_keeping(s, now):
                continue
            reasons = s.banned_for if banned else dict(s.reasons)
            until = s.banned_until if banned else 0.0
            found.append(
                Row(s.key, round(score, 2), s.ban_score, s.bans, until, s.last_ban, reasons, False)
            )
        found.sort(key=lambda r: (-r.banned_until, -r.score, -r.last_ban, r.source))
        return found[:limit]


def _first_address(key: str) -> Address:
    if "/" in key:
        return IPv6Network(key).network_address
    return ip_address(key)
