"""The defender's scores and bans, on a clock the test moves (no sleeps)."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from conduit.auth.bantable import request_unban, rows
from conduit.auth.defender import (
    Defender,
    Offence,
    active,
    number,
    parse_source,
    source_key,
)
from conduit.config import parse
from conduit.config.auth import AuthConfig
from conduit.config.auth import Defender as Settings
from conduit.gateway.admission import source_key as admission_key
from conduit.state import StateDB

FAIL = Offence.AUTH_FAILED


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(**settings: Any) -> tuple[Defender, Clock]:
    clock = Clock()
    return Defender(Settings(**settings), clock=clock), clock


def flood(defender: Defender, address: str, n: int, offence: Offence = FAIL) -> list[Any]:
    return [b for b in (defender.penalise(ip_address(address), offence) for _ in range(n)) if b]


def test_a_flood_from_one_address_is_banned_and_no_other_address_is() -> None:
    defender, clock = make(threshold=10, ban_time="15m")
    bans = flood(defender, "192.0.2.7", 10)
    assert len(bans) == 1
    assert bans[0].source == "192.0.2.7"
    assert bans[0].until == clock.now + 900
    assert bans[0].reasons == "auth_failed=10"
    assert defender.banned(ip_address("192.0.2.7")) == clock.now + 900
    assert defender.banned(ip_address("192.0.2.8")) is None
    clock.now += 901
    assert defender.banned(ip_address("192.0.2.7")) is None


def test_ipv6_sources_are_grouped_by_64() -> None:
    defender, _ = make(threshold=4)
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"):
        defender.penalise(ip_address(host), FAIL)
    bans = flood(defender, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", 1)
    assert [b.source for b in bans] == ["2001:db8:1:2::/64"]
    assert defender.banned(ip_address("2001:db8:1:2::abcd")) is not None
    assert defender.banned(ip_address("2001:db8:1:3::1")) is None  # the next /64
    # an IPv4-mapped address is its IPv4 source; the same grouping as admission
    assert admission_key is source_key  # the per-source startup limit counts the same
    assert source_key(ip_address("::ffff:192.0.2.1")) == "192.0.2.1"
    # the accept-time number: one per source, IPv4 and IPv6 never collide
    assert number(ip_address("::ffff:192.0.2.1")) == number(ip_address("192.0.2.1"))
    assert number(ip_address("2001:db8::1")) == number(ip_address("2001:db8::ffff:1"))
    assert number(ip_address("::c000:201")) != number(ip_address("192.0.2.1"))
    assert number(ip_address("::")) != number(ip_address("0.0.0.0"))


def test_an_allowed_network_is_never_banned() -> None:
    defender, _ = make(threshold=1, allow=["10.0.0.0/8"])
    assert flood(defender, "10.1.2.3", 1000) == []
    assert flood(defender, "11.1.2.3", 1)  # outside it: banned at once
    assert flood(defender, "::ffff:10.9.9.9", 50) == []  # as a dual-stack listener sees it


def test_occasional_failures_decay_and_never_ban() -> None:
    # an honest user: a wrong key three times an hour, for two days
    defender, clock = make(threshold=10, half_life="10m")
    for _ in range(3 * 48):
        assert defender.penalise(ip_address("192.0.2.9"), FAIL) is None
        clock.now += 20 * 60
    (source,) = defender.sources()
    assert source.decayed(clock.now, 600) < 2


def test_repeat_bans_grow_and_are_capped_then_forgotten() -> None:
    defender, clock = make(threshold=2, ban_time="1m", max_ban_time="5m", forget_after="1h")
    durations = []
    for _ in range(5):
        (ban,) = flood(defender, "192.0.2.1", 2)
        durations.append(ban.duration)
        clock.now = ban.until + 1
    assert durations == [60, 120, 240, 300, 300]
    clock.now += 3601  # an hour after the last ban ended: the history is gone
    (ban,) = flood(defender, "192.0.2.1", 2)
    assert ban.duration == 60 and ban.bans == 1


def test_bans_longer_than_forget_after_keep_their_length() -> None:
    # the history is counted from the end of the last ban, not its start
    defender, clock = make(threshold=1, ban_time="1h", max_ban_time="2d", forget_after="1d")
    durations = []
    for _ in range(8):
        (ban,) = flood(defender, "192.0.2.1", 1)
        durations.append(ban.duration / 3600)
        clock.now = ban.until + 60
    assert durations == [1, 2, 4, 8, 16, 32, 48, 48]


def test_growth_never_overflows() -> None:
    defender, clock = make(threshold=1, ban_time="1s", max_ban_time="1s", ban_growth=16)
    for _ in range(300):
        (ban,) = flood(defender, "192.0.2.1", 1)
        clock.now = ban.until + 0.5
    assert ban.bans == 300 and ban.duration == 1


def test_weights_by_offence_and_zero_turns_one_off() -> None:
    defender, _ = make(threshold=4, no_auth=0, grace_expired=2)
    assert flood(defender, "192.0.2.2", 50, Offence.NO_AUTH) == []
    assert len(flood(defender, "192.0.2.2", 2, Offence.GRACE_EXPIRED)) == 1


def test_bans_and_scores_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    db = StateDB.open(tmp_path)
    settings = Settings(threshold=5)
    first = Defender(settings, db, clock=clock)
    flood(first, "192.0.2.1", 5)  # banned: written at once
    flood(first, "192.0.2.2", 4)  # half-way: written at clean shutdown
    crashed = Defender(settings, StateDB.open(tmp_path), clock=clock)
    assert crashed.banned(ip_address("192.0.2.1")) is not None
    assert {s.key for s in crashed.sources()} == {"192.0.2.1"}  # the score died with it
    first.save()
    second = Defender(settings, StateDB.open(tmp_path), clock=clock)
    assert second.banned(ip_address("192.0.2.1")) is not None
    assert len(flood(second, "192.0.2.2", 1)) == 1  # 4 + 1: the restart reset nothing
    listed = {r.source: r for r in rows(db)}
    assert listed["192.0.2.1"].bans == 1 and listed["192.0.2.1"].reasons == {"auth_failed": 5}


def test_unban_lifts_the_ban_once_and_only_for_a_banned_source(tmp_path: Path) -> None:
    clock = Clock()
    db = StateDB.open(tmp_path)
    defender = Defender(Settings(threshold=3), db, clock=clock)
    (ban,) = flood(defender, "192.0.2.1", 3)
    with pytest.raises(LookupError):
        request_unban(db, "192.0.2.99", "cli", now=clock.now)
    assert request_unban(StateDB.open(tmp_path), "192.0.2.1", "cli", now=clock.now) == ban.until
    with pytest.raises(LookupError):  # already lifted
        request_unban(db, "192.0.2.1", "cli", now=clock.now)
    # still refused until the gateway takes the unban; then journalled once
    assert defender.banned(ip_address("192.0.2.1")) is not None
    (unban,) = defender.take_unbans()
    assert (unban.source, unban.by, unban.until) == ("192.0.2.1", "cli", ban.until)
    assert defender.take_unbans() == []
    assert defender.banned(ip_address("192.0.2.1")) is None
    (again,) = flood(defender, "192.0.2.1", 3)
    assert again.bans == 1  # the history was forgotten with the ban


def test_a_shutdown_save_does_not_undo_a_pending_unban(tmp_path: Path) -> None:
    clock = Clock()
    db = StateDB.open(tmp_path)
    defender = Defender(Settings(threshold=3), db, clock=clock)
    flood(defender, "192.0.2.1", 3)
    request_unban(db, "192.0.2.1", "cli", now=clock.now)
    defender.save()  # a gateway stopping before it noticed
    restarted = Defender(Settings(threshold=3), StateDB.open(tmp_path), clock=clock)
    assert restarted.banned(ip_address("192.0.2.1")) is None
    assert [u.source for u in restarted.take_unbans()] == ["192.0.2.1"]


def test_a_reload_that_allows_a_banned_source_lifts_its_ban() -> None:
    defender, _ = make(threshold=1)
    flood(defender, "192.0.2.1", 1)
    lifted = defender.configure(Settings(threshold=1, allow=["192.0.2.0/24"]))
    assert [(u.source, u.by) for u in lifted] == [("192.0.2.1", "allow-list")]
    assert defender.banned(ip_address("192.0.2.1")) is None


def test_memory_is_bounded_and_bans_are_kept_when_pruning() -> None:
    defender, _ = make(threshold=2, max_sources=16)
    flood(defender, "192.0.2.1", 2)  # banned
    for n in range(200):
        defender.penalise(ip_address(f"198.51.100.{n}"), FAIL)
    assert len(defender.sources()) <= 16
    assert defender.banned(ip_address("192.0.2.1")) is not None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1/32 ", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::/64", "2001:db8::/64"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_addresses_people_type(text: str, key: str) -> None:
    assert parse_source(text) == key


@pytest.mark.parametrize(
    "text", ["", "bob", "192.0.2.0/24", "2001:db8::/48", "1.2.3.4.5", "\x1b[31m"]
)
def test_bad_addresses_have_a_one_line_reason(text: str) -> None:
    with pytest.raises(ValueError, match="not an IP address") as info:
        parse_source(text)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_bad_settings_are_refused() -> None:
    for bad in (
        {"ban_time": 0},
        {"max_ban_time": "1m", "ban_time": "2m"},
        {"half_life": 0},
        {"auth_failed": -1},
        {"threshold": 0},
    ):
        with pytest.raises(ValueError):
            Settings(**bad)


def test_only_a_policy_with_the_section_is_defended(tmp_path: Path) -> None:
    assert not active(AuthConfig())
    assert active(AuthConfig(defender=Settings()))
    assert not active(AuthConfig(defender=Settings(enabled=False)))
    base = f'[gateway]\ndata_dir = "{tmp_path}"\n'
    assert not active(parse(base).auth)
    assert active(parse(base + "[auth.defender]\n").auth)


def test_how_a_connection_ended_is_scored() -> None:
    import asyncssh

    from conduit.gateway.defending import offence

    assert offence(0, asyncssh.ProtocolError("bad packet")) is Offence.PROTOCOL_ERROR
    assert offence(3, asyncssh.MACError("bad mac")) is Offence.PROTOCOL_ERROR
    assert offence(0, asyncssh.ConnectionLost("Login timeout expired")) is Offence.GRACE_EXPIRED
    assert offence(2, asyncssh.ConnectionLost("Connection lost")) is Offence.AUTH_FAILED
    assert offence(0, None) is Offence.NO_AUTH
    # no common algorithm is an old client, not an attack: no heavier than no_auth
    assert offence(0, asyncssh.KeyExchangeFailed("no matching kex")) is Offence.NO_AUTH


def test_new_users_get_a_defender_that_spares_this_host(tmp_path: Path) -> None:
    from importlib import resources

    from conduit.config.default import embedded

    demo = embedded(tmp_path, keys=[])
    starter = resources.files("conduit.config").joinpath("starter.toml").read_text()
    assert "[auth.defender]" in starter
    assert active(demo.auth)
    for config in (demo,):
        defender = Defender(config.auth.defender)
        assert flood(defender, "127.0.0.1", 1000) == [] and flood(defender, "::1", 1000) == []
        assert flood(defender, "127.0.0.2", 20)  # another address is not spared


def test_threshold_quick_failures_ban_despite_a_little_decay() -> None:
    defender, clock = make(threshold=10, half_life="10m")
    for _ in range(9):
        assert defender.penalise(ip_address("192.0.2.3"), FAIL) is None
        clock.now += 0.5
    assert defender.penalise(ip_address("192.0.2.3"), FAIL) is not None  # 9.97 points
    slow, clock = make(threshold=10, half_life="10m")
    for _ in range(10):  # one a minute: ~8.5 points by the tenth
        assert slow.penalise(ip_address("192.0.2.3"), FAIL) is None
        clock.now += 60


def test_live_rows_decay_and_put_bans_first() -> None:
    defender, clock = make(threshold=3, half_life="10m")
    flood(defender, "192.0.2.1", 1)
    flood(defender, "192.0.2.2", 3)  # banned
    clock.now += 600
    live = defender.live()
    assert [r.source for r in live] == ["192.0.2.2", "192.0.2.1"]
    assert live[0].banned_until > clock.now and live[0].reasons == {"auth_failed": 3}
    assert live[1].banned_until == 0 and live[1].score == 0.5  # halved
    assert defender.live(limit=1) == live[:1]
