"""Table tests of ``Policy.decide``: every rule and every deny reason."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from conduit.config import Obligation, Op, parse
from conduit.policy import Policy, Request

from .conftest import EVERY_OBLIGATION, ask, at

ENT = "10.10.1.1"  # enterprise
BOB = "10.10.5.3"  # enterprise, inside bob's networks
DMZ = "10.20.0.5"
CTRL = "192.168.0.50"
CTRL6 = "fd00:1::5"
NOWHERE = "8.8.8.8"
MiB = 1024 * 1024

# (user, source, op, path, size, allowed, rule, words in the client reason)
CASES = [
    # allowed: same zone, the grant decides
    ("alice", DMZ, "read", "/logs/a.txt", None, True, "roles.engineer.grants[1]", "allowed"),
    ("alice", DMZ, "write", "/firmware/sub/x.img", 5, True, "roles.engineer.grants[0]", "allowed"),
    ("alice", CTRL6, "read", "/devices/plc-01/etc/x", None, True, "roles.engineer.grants[2]", ""),
    ("bob", BOB, "write", "/drop/reports/a.csv", None, True, "roles.operator.grants[0]", ""),
    ("bob", BOB, "rename", "/drop/reports/b.csv", None, True, "roles.operator.grants[0]", ""),
    ("bob", BOB, "delete", "/drop/reports/b.csv", None, True, "roles.operator.grants[0]", ""),
    ("bob", BOB, "mkdir", "/drop/reports", None, True, "roles.operator.grants[0]", ""),
    ("bob", BOB, "list", "/drop", None, True, "roles.operator.grants[0]", ""),
    # allowed: zones differ, a conduit decides
    ("alice", ENT, "write", "/firmware/fw.bin", 1000, True, "conduits[firmware-down]", ""),
    ("alice", ENT, "write", "/firmware/fw.bin", 512 * MiB, True, "conduits[firmware-down]", ""),
    ("alice", ENT, "read", "/logs/a.log", None, True, "conduits[logs-up]", ""),
    ("alice", ENT, "list", "/logs", None, True, "conduits[logs-up]", ""),
    ("alice", ENT, "write", "/devices/plc-01/fw.bin", None, True, "conduits[firmware-to-plc]", ""),
    ("alice", ENT, "read", "/devices/plc-02/cfg.xml", None, True, "conduits[plc-read]", ""),
    ("bob", BOB, "read", "/devices/hmi-01/logs/a.log", None, True, "conduits[plc-read]", ""),
    # virtual directories
    ("alice", ENT, "list", "/", None, True, "virtual", ""),
    ("alice", ENT, "list", "/devices", None, True, "virtual", ""),
    ("carol", ENT, "list", "/", None, True, "virtual", ""),
    ("carol", ENT, "list", "/devices", None, False, "deny:hidden", "no such file"),
    ("alice", ENT, "write", "/x.bin", None, False, "deny:unknown-target", "no such"),
    ("alice", ENT, "delete", "/", None, False, "deny:virtual", "read-only"),
    ("alice", ENT, "mkdir", "/devices", None, False, "deny:virtual", "read-only"),
    # deny: who
    ("mallory", ENT, "list", "/", None, False, "deny:unknown-user", "unknown user"),
    ("alice", NOWHERE, "list", "/", None, False, "deny:no-zone", "no zone"),
    ("alice", "::1", "read", "/logs/a.log", None, False, "deny:no-zone", "no zone"),
    ("bob", ENT, "list", "/", None, False, "users.bob.networks", "not allowed from"),
    # deny: what and where
    ("alice", ENT, "read", "/nowhere/x", None, False, "deny:unknown-target", "no such"),
    ("alice", ENT, "read", "/devices/rtu-9/x", None, False, "deny:unknown-target", "no such"),
    ("alice", DMZ, "delete", "/firmware", None, False, "deny:target-root", "not allowed"),
    ("alice", DMZ, "write", "/firmware/notes.txt", None, False, "deny:no-grant", "not granted"),
    ("alice", DMZ, "delete", "/firmware/fw.bin", None, False, "deny:no-grant", "not granted"),
    ("alice", DMZ, "write", "/logs/a.log", None, False, "deny:no-grant", "not granted"),
    ("alice", ENT, "write", "/devices/hmi-01/x.bin", None, False, "deny:hidden", "no such"),
    ("bob", BOB, "write", "/drop/reports/sub/a.csv", None, False, "deny:no-grant", ""),
    ("bob", BOB, "mkdir", "/drop/other", None, False, "deny:no-grant", ""),
    ("bob", BOB, "read", "/devices/hmi-01/etc/passwd", None, False, "deny:no-grant", ""),
    ("alice", ENT, "read", "/firmware/a\x00.bin", None, False, "deny:bad-path", "invalid"),
    # deny: flow
    ("alice", CTRL, "write", "/firmware/fw.bin", None, False, "deny:hidden", "no such"),
    ("alice", ENT, "read", "/logs/a.txt", None, False, "conduits[logs-up]", "for this path"),
    ("alice", ENT, "write", "/devices/plc-01/c.xml", 1, False, "conduits[firmware-to-plc]", "path"),
    (
        "alice",
        ENT,
        "write",
        "/firmware/f.bin",
        512 * MiB + 1,
        False,
        "conduits[firmware-down]",
        "larger",
    ),
    # normalisation: ".." never escapes and is judged as its normalised form
    ("alice", ENT, "read", "/firmware/../logs/a.log", None, True, "conduits[logs-up]", ""),
    ("alice", DMZ, "write", "/logs/../firmware/x.bin", None, True, "roles.engineer.grants[0]", ""),
    ("alice", DMZ, "write", "/firmware/../../x.bin", None, False, "deny:unknown-target", ""),
    ("alice", DMZ, "write", "/firmware/a.bin/../b.txt", None, False, "deny:no-grant", ""),
]


@pytest.mark.parametrize(
    ("user", "source", "op", "path", "size", "allowed", "rule", "reason"), CASES
)
def test_decide(
    policy: Policy,
    example_config,
    user: str,
    source: str,
    op: str,
    path: str,
    size: int | None,
    allowed: bool,
    rule: str,
    reason: str,
) -> None:
    decision = ask(policy, user, source, op, path, size)
    assert (decision.allowed, decision.rule) == (allowed, rule), decision.detail
    assert reason in decision.reason
    assert "\n" not in decision.reason
    assert user in decision.detail

    # The gateway's own policy (no inspection yet) refuses a conduit's
    # obligations; ``explain`` and ``decide`` give the same verdict and reason.
    gateway = Policy(example_config, clock=policy.clock)
    request = Request(user, ip_address(source), Op(op), path, size)
    refused, explained = gateway.decide(request), gateway.explain(request).decision
    assert refused == explained
    if decision.obligations:
        required = ", ".join(sorted(decision.obligations))
        assert (refused.allowed, refused.rule) == (False, rule)
        assert refused.reason == f"requires {required}, which this gateway cannot enforce yet"
    else:
        assert refused == decision


def test_conduit_allow_carries_obligations_and_limit(policy: Policy) -> None:
    d = ask(policy, "alice", ENT, "write", "/firmware/fw.bin")
    assert d.obligations == {Obligation.SIGNATURE, Obligation.APPROVAL}
    assert d.max_size == 512 * MiB
    assert (d.grant, d.conduit) == ("roles.engineer.grants[0]", "conduits[firmware-down]")
    assert (d.client_zone, d.target_zone) == ("enterprise", "dmz")
    d = ask(policy, "alice", ENT, "write", "/devices/plc-01/fw.bin")
    assert d.obligations == {Obligation.SIGNATURE} and d.max_size == 64 * MiB


def test_same_zone_has_no_obligations_or_limit(policy: Policy) -> None:
    d = ask(policy, "alice", DMZ, "write", "/firmware/fw.bin", 10**12)
    assert d.allowed and d.obligations == frozenset() and d.max_size is None
    assert d.conduit is None


def test_directory_ops_carry_no_obligations(policy: Policy) -> None:
    d = ask(policy, "alice", ENT, "list", "/firmware")
    assert d.allowed and d.obligations == frozenset() and d.max_size is None


@pytest.mark.parametrize(
    ("when", "allowed"),
    [
        ("2026-11-28T02:00", True),  # Sat window opens (start inclusive)
        ("2026-11-28T05:59", True),
        ("2026-11-28T06:00", False),  # end exclusive
        ("2026-11-26T12:00", False),  # Thursday noon
        ("2026-11-27T22:00", True),  # Fri 22:00, Mon-Fri 22:00-05:00
        ("2026-11-28T01:30", True),  # Fri night runs into Saturday
        ("2026-11-24T04:59", True),  # Mon night into Tuesday
        ("2026-11-23T04:00", False),  # Monday 04:00: Sunday night is not listed
        ("2026-11-29T23:00", False),  # Sunday
    ],
)
def test_window_in_gateway_time_zone(example_config, when: str, allowed: bool) -> None:
    policy = Policy(example_config, clock=at(when), enforceable=EVERY_OBLIGATION)
    d = policy.decide(Request("alice", ip_address(ENT), Op.WRITE, "/firmware/fw.bin"))
    assert d.allowed is allowed, d.detail
    if not allowed:
        assert d.rule == "conduits[firmware-down]" and "window" in d.reason
        assert "Europe/Berlin" in d.detail


def test_window_beats_path_miss_in_the_reason() -> None:
    """When several conduits fail, the one that got furthest explains the denial."""
    config = parse(
        """
        [zones.a]
        level = 3
        networks = ["10.0.0.0/24"]
        [zones.b]
        level = 2
        networks = ["10.0.1.0/24"]
        [areas.x]
        zone = "b"
        path = "x"
        [roles.r]
        grants = [{ target = "x", ops = ["write", "read", "list", "mkdir"] }]
        [users.u]
        keys = ["k"]
        roles = ["r"]
        [[conduits]]
        name = "only-txt"
        from = "a"
        to = "b"
        paths = ["*.txt"]
        [[conduits]]
        name = "night"
        from = "a"
        to = "b"
        window = "daily 22:00-04:00"
        require = ["scan"]
        [[conduits]]
        name = "small"
        from = "b"
        to = "a"
        max_size = "1KiB"
        require = ["scan"]
        """
    )
    policy = Policy(config, clock=at("2026-11-24T12:00"), enforceable=EVERY_OBLIGATION)
    src = ip_address("10.0.0.9")
    d = policy.decide(Request("u", src, Op.WRITE, "/x/a.bin"))
    assert (d.allowed, d.rule) == (False, "conduits[night]")
    assert policy.decide(Request("u", src, Op.WRITE, "/x/a.txt")).rule == "conduits[only-txt]"
    # mkdir and list carry no obligations; read does, with the limit
    assert policy.decide(Request("u", src, Op.LIST, "/x")).obligations == frozenset()
    read = policy.decide(Request("u", src, Op.READ, "/x/a.bin"))
    assert read.obligations == {Obligation.SCAN} and read.max_size == 1024
    big = policy.decide(Request("u", src, Op.READ, "/x/a.bin", 1025))
    assert (big.allowed, big.rule) == (False, "conduits[small]")
    night = Policy(config, clock=at("2026-11-24T23:00"), enforceable=EVERY_OBLIGATION)
    assert night.decide(Request("u", src, Op.WRITE, "/x/a.bin")).obligations == {Obligation.SCAN}


def test_zone_of_and_roots(policy: Policy) -> None:
    assert policy.zone_of("10.10.200.1") == "enterprise"
    assert policy.zone_of(ip_address("fd00:1::1")) == "control"
    assert policy.zone_of("10.20.1.1") is None
    assert policy.roots("alice", ip_address(ENT)) == ["devices", "firmware", "logs"]
    assert policy.roots("carol", ip_address(ENT)) == ["logs"]
    assert policy.roots("alice", ip_address(NOWHERE)) == []
    assert policy.visible_devices("alice", ip_address(ENT)) == ["plc-01", "plc-02"]
    assert policy.visible_devices("bob", ip_address(BOB)) == ["hmi-01", "plc-01", "plc-02"]


def test_explain_lists_steps(policy: Policy) -> None:
    e = policy.explain(Request("alice", ip_address(ENT), Op.READ, "/logs/a.txt"))
    assert not e.decision.allowed
    assert [s.question for s in e.steps] == ["user", "zone", "target", "grant", "conduit"]
    assert [s.ok for s in e.steps] == [True, True, True, True, False]
    assert e.steps[-1].rule == "conduits[logs-up]"


def test_unknown_time_zone_is_refused(example_config) -> None:
    from conduit.policy import PolicyError

    bad = example_config.model_copy(
        update={"gateway": example_config.gateway.model_copy(update={"timezone": "Mars/Olympus"})}
    )
    with pytest.raises(PolicyError, match="Mars/Olympus"):
        Policy(bad)


def test_ipv4_mapped_ipv6_source_is_its_ipv4_address(policy: Policy) -> None:
    """Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; the zone is the IPv4 one."""
    mapped = ip_address("::ffff:10.20.0.5")
    assert policy.zone_of(mapped) == "dmz"
    d = policy.decide(Request("alice", mapped, Op.READ, "/logs/a.txt"))
    assert d.allowed and d.client_zone == "dmz"
    assert not policy.decide(Request("bob", ip_address("::ffff:10.10.1.1"), Op.LIST, "/")).allowed
    assert policy.decide(Request("bob", ip_address("::ffff:10.10.5.1"), Op.LIST, "/")).allowed
