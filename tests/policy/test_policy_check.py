"""``check``: cross-reference problems with key and line; the embedded default passes."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path

import pytest

from conduit.config import ConfigError, Obligation, Op, embedded, parse
from conduit.policy import Policy, Request
from conduit.site.build import load_checked
from conduit.site.check import Problem, check, coverage, errors
from tests.config.site import usable_copy

from .conftest import EXAMPLE

BAD = """\
[gateway]
timezone = "Europe/Nowhere"

[zones.enterprise]
level = 4
networks = ["10.10.0.0/16"]
[zones.dmz]
level = 3.5
networks = ["10.10.5.0/24"]
[zones.empty]
level = 2

[areas.firmware]
zone = "dmz"
path = "fw"
[areas.devices]
zone = "dmz"
path = "d"
[areas.logs]
zone = "cloud"
path = "logs"

[devices.plc-01]
zone = "control"
address = "192.168.0.10:22"
user = "admin"

[roles.engineer]
grants = [
  { target = "firmware", ops = ["read"], paths = ["/abs/*.bin", "a//b", "ok/../x"] },
  { target = "firmwre", ops = ["read"] },
  { target = "devices/rtu-*", ops = [] },
]
[roles.unused]
grants = []

[users.alice]
roles = ["engineer", "admin"]
networks = ["172.16.0.0/12"]

[[conduits]]
name = "loop"
from = "dmz"
to = "dmz"

[[conduits]]
name = "loop"
from = "enterprise"
to = "ot"
window = "Sat 02:00-25:00"
paths = ["logs/*.log", "*.bin/"]
"""

EXPECTED_ERRORS = [
    (2, "gateway.timezone", "unknown time zone"),
    (9, "zones.dmz.networks[0]", "10.10.5.0/24 overlaps 10.10.0.0/16"),
    (16, "areas.devices", "reserved"),
    (20, "areas.logs.zone", "unknown zone 'cloud'"),
    (24, "devices.plc-01.zone", "unknown zone 'control'"),
    (30, "roles.engineer.grants[0].paths[0]", "relative"),
    (30, "roles.engineer.grants[0].paths[1]", "empty component"),
    (30, "roles.engineer.grants[0].paths[2]", "'..'"),
    (31, "roles.engineer.grants[1].target", "unknown area 'firmwre'"),
    (32, "roles.engineer.grants[2].target", "matches no device"),
    (32, "roles.engineer.grants[2].ops", "grants no operation"),
    (37, "users.alice.keys", "can never log in"),
    (38, "users.alice.roles", "unknown role 'admin'"),
    (44, "conduits[0].to", "needs no conduit"),
    (47, "conduits[1].name", "duplicate conduit name 'loop'"),
    (49, "conduits[1].to", "unknown zone 'ot'"),
    (50, "conduits[1].window", "not a time of day"),
    (51, "conduits[1].paths[1]", "trailing"),
]


def test_every_cross_reference_problem_is_reported_with_key_and_line() -> None:
    problems = check(parse(BAD), BAD)
    found = [(p.line, p.key, p.message) for p in errors(problems)]
    for line, key, words in EXPECTED_ERRORS:
        assert any((fl, fk) == (line, key) and words in fm for fl, fk, fm in found), (
            f"missing {line} {key} {words!r} in {found}"
        )
    assert len(found) == len(EXPECTED_ERRORS), found
    warnings = {p.key: p.message for p in problems if p.severity == "warning"}
    assert "no client can be in this zone" in warnings["zones.empty"]
    assert "no user has this role" in warnings["roles.unused"]
    assert "in no zone" in warnings["users.alice.networks"]
    assert (
        str(errors(problems)[0]) == "line 2: gateway.timezone: unknown time zone 'Europe/Nowhere'"
    )


def _clean(problems: list[Problem]) -> list[Problem]:
    """The examples require "signature" and "approval" on conduits without
    trust sets or approvers (they show the policy's shape, not a site's keys
    and people): those two warnings are expected."""
    expected = ('"signature" without trust', "requires approval, but no role grants approve")
    return [p for p in problems if not p.message.startswith(expected)]


def test_example_file_is_clean(tmp_path: Path) -> None:
    site = usable_copy(EXAMPLE, tmp_path)
    config = load_checked(site)
    problems = check(config, site.read_text())
    assert any(p.severity == "warning" for p in problems)  # the no-trust warning fires
    assert _clean(problems) == []


def test_load_checked_rejects_with_reasons(tmp_path: Path) -> None:
    bad = tmp_path / "conduit.toml"
    bad.write_text(BAD)
    with pytest.raises(ConfigError) as info:
        load_checked(bad)
    assert any("unknown zone 'cloud'" in p for p in info.value.problems)
    assert str(bad) in str(info.value)


def test_embedded_default_passes_check_and_serves_the_demo_user(tmp_path: Path) -> None:
    config = embedded(tmp_path, user="demo", keys=["ssh-ed25519 AAAAC3Nza demo@host"])
    assert errors(check(config)) == []
    policy = Policy(config)
    local = ip_address("127.0.0.1")
    for op in (Op.LIST, Op.READ, Op.WRITE, Op.MKDIR, Op.RENAME, Op.DELETE):
        path = "/inbox" if op is Op.LIST else "/inbox/sub/a.txt"
        assert policy.decide(Request("demo", local, op, path)).allowed, op
    assert policy.decide(Request("demo", ip_address("::1"), Op.READ, "/outbox/r.txt")).allowed
    assert policy.decide(Request("demo", local, Op.LIST, "/outbox")).allowed
    assert not policy.decide(Request("demo", local, Op.WRITE, "/outbox/r.txt")).allowed
    assert not policy.decide(Request("demo", ip_address("10.0.0.1"), Op.LIST, "/")).allowed
    assert policy.roots("demo", local) == ["inbox", "outbox"]


def test_coverage_sentences() -> None:
    config = parse('[zones.all]\nlevel = 4\nnetworks = ["0.0.0.0/0"]\n')
    lines = coverage(config)
    assert "Every IPv4 address is in a zone." in lines
    assert any("No zone covers any IPv6" in line for line in lines)
    assert coverage(parse("")) == ["No zone has networks: every client is denied everything."]


def test_design_example_passes_check_and_decides(tmp_path: Path) -> None:
    design = usable_copy(EXAMPLE.parent / "design.toml", tmp_path)
    config = load_checked(design)
    assert _clean(check(config, design.read_text())) == []
    policy = Policy(
        config,
        clock=lambda: datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
        enforceable=frozenset(Obligation),
    )
    ent = ip_address("10.10.0.7")
    fw = policy.decide(Request("alice", ent, Op.WRITE, "/devices/plc-01/fw.bin", 10))
    assert (fw.allowed, fw.rule) == (True, "conduits[firmware-down]")
    assert fw.max_size == 512 * 1024 * 1024
    up = policy.decide(
        Request("alice", ip_address("192.168.0.5"), Op.READ, "/devices/plc-01/a.log")
    )
    assert (up.allowed, up.rule) == (True, "roles.engineer.grants[2]")  # same zone
    logs = policy.decide(Request("alice", ent, Op.READ, "/logs/a.log"))
    # No conduit between dmz and enterprise either way: /logs is hidden from there.
    assert (logs.allowed, logs.rule, logs.hidden) == (False, "deny:hidden", True)


def test_type_is_implied_by_types_and_meaningless_alone() -> None:
    zones = '[zones.a]\nlevel = 1\nnetworks = ["10.0.0.0/8"]\n[zones.b]\nlevel = 2\n'
    base = zones + '[[conduits]]\nname = "c"\nfrom = "a"\nto = "b"\n'
    alone = check(parse(base + 'require = ["type"]\n'))
    assert any(p.severity == "error" and '"type" without types' in p.message for p in alone)
    typed = parse(base + 'types = ["application/gzip"]\n')
    assert typed.conduits[0].obligations == {Obligation.TYPE}  # goes to quarantine
    assert not any('"type"' in p.message for p in check(typed))
    unsigned = check(parse(base + 'require = ["signature"]\n'))
    assert any(p.severity == "warning" and "without trust" in p.message for p in unsigned)
