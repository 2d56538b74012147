"""Rename obeys the conduits, hidden targets read as missing, drop folders, windows.

Table tests over one small two-zone site: enterprise clients, DMZ areas.
"""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from conduit.config import Op, parse
from conduit.policy import ABSENT, Policy, Rename, Request

from .conftest import at

ENT = ip_address("10.0.0.5")
DMZ = ip_address("10.0.1.5")

SITE = """
[zones.ent]
level = 4
networks = ["10.0.0.0/24"]
[zones.dmz]
level = 3.5
networks = ["10.0.1.0/24"]
[zones.ctl]
level = 1
networks = ["10.0.2.0/24"]

[areas.fw]
zone = "dmz"
path = "fw"
[areas.cfg]
zone = "dmz"
path = "cfg"
[areas.drop]
zone = "dmz"
path = "drop"
[areas.secret]
zone = "dmz"
path = "secret"
[areas.plant]
zone = "ctl"
path = "plant"

[[roles.eng.grants]]
target = "fw"
ops = ["list", "read", "write", "rename", "mkdir"]
[[roles.eng.grants]]
target = "cfg"
ops = ["list", "read", "write", "rename", "mkdir"]
paths = ["s/*.xml", "o/*.xml"]
[[roles.eng.grants]]
target = "plant"
ops = ["list", "read"]
[roles.deleter]
grants = [{ target = "fw", ops = ["delete"] }]
[roles.dropper]
grants = [{ target = "drop", ops = ["write"], paths = ["in/*.bin"] }]

[users.u]
keys = ["k"]
roles = ["eng", "dropper"]
[users.d]
keys = ["k"]
roles = ["eng", "deleter"]

[[conduits]]
name = "fw-bin"
from = "ent"
to = "dmz"
paths = ["*.bin"]
max_size = "1KiB"
[[conduits]]
name = "notes"
from = "ent"
to = "dmz"
paths = ["*.txt", "*.log", "*.xml"]
[[conduits]]
name = "up"
from = "dmz"
to = "ent"
paths = ["fw/*.log", "fw/*.bin", "cfg/s/*.xml"]
window = "daily 08:00-18:00"
"""


@pytest.fixture
def site() -> Policy:
    return Policy(parse(SITE), clock=at("2026-11-24T12:00"))


def rename(
    policy: Policy, user: str, old: str, new: str, size: int | None = None, **facts: bool
) -> tuple[bool, str, str]:
    d = policy.decide_rename(Rename(user, ENT, old, new, size, **facts))
    return d.allowed, d.rule, d.reason


# (user, old, new, size, facts, allowed, rule, words in the client reason)
RENAMES = [
    # the three holes
    ("u", "/fw/fw.txt", "/fw/fw.bin", 100_000, {}, False, "conduits[up]", "read the old name"),
    ("u", "/fw/fw.log", "/fw/fw.bin", 100_000, {}, False, "conduits[fw-bin]", "larger than 1024"),
    ("u", "/fw/config.txt", "/fw/config.log", 10, {}, False, "conduits[up]", "read the old name"),
    ("u", "/fw/a.log", "/fw/b.log", 10, {"replaces": True}, False, "deny:no-grant", "delete"),
    # what passes: readable old name, writable new one, delete when replacing
    ("u", "/fw/fw.log", "/fw/fw.bin", 1000, {}, True, "conduits[fw-bin]", "allowed"),
    ("d", "/fw/a.log", "/fw/b.log", 10, {"replaces": True}, True, "conduits[notes]", "allowed"),
    # the new name's own rules: pattern and size
    ("u", "/fw/a.log", "/fw/a.exe", 10, {}, False, "conduits[fw-bin]", "rename to the new"),
    ("u", "/fw/a.bin", "/fw/b.bin", 1025, {}, False, "conduits[fw-bin]", "larger"),
    # folders: list the old, create the new; refused where patterns see folder names
    ("u", "/fw/dir", "/fw/dir2", None, {"folder": True}, False, "conduits[up]", "list the old"),
    ("u", "/cfg/s", "/cfg/new", None, {"folder": True}, False, "deny:no-grant", "rename to"),
    ("u", "/cfg/s", "/cfg/o", None, {"folder": True}, False, "deny:folder-rename", "folder"),
    # across targets, and into what the user may not see
    ("u", "/fw/a.log", "/cfg/s/a.xml", 10, {}, False, "deny:cross-target", "across"),
    ("u", "/fw/a.log", "/secret/a.log", 10, {}, False, "deny:hidden", ABSENT),
    ("u", "/nowhere/a.log", "/fw/a.log", 10, {}, False, "deny:unknown-target", ABSENT),
]


@pytest.mark.parametrize(
    ("user", "old", "new", "size", "facts", "allowed", "rule", "words"),
    RENAMES,
    ids=[f"{r[1]}->{r[2]}" for r in RENAMES],
)
def test_rename_is_a_read_and_a_write(
    site: Policy,
    user: str,
    old: str,
    new: str,
    size: int | None,
    facts: dict[str, bool],
    allowed: bool,
    rule: str,
    words: str,
) -> None:
    got = rename(site, user, old, new, size, **facts)
    assert got[:2] == (allowed, rule), got
    assert words in got[2]


def test_rename_of_folder_with_deep_conduit_pattern_is_refused(site: Policy) -> None:
    """``fw/**`` on the read conduit sees every folder name below /fw."""
    deep = Policy(parse(SITE.replace('"fw/*.log", ', '"fw/**", ')), clock=at("2026-11-24T12:00"))
    assert rename(deep, "u", "/fw/dir", "/fw/dir2", folder=True)[1] == "deny:folder-rename"
    same_zone = Rename("u", DMZ, "/fw/dir", "/fw/dir2", folder=True)
    assert deep.decide_rename(same_zone).allowed  # same zone: only grant patterns count
    got = site.decide_rename(Rename("u", ENT, "/cfg/s", "/cfg/o", folder=True))
    assert "s/*.xml" in got.detail


def test_hidden_half_reads_exactly_as_missing(site: Policy) -> None:
    hidden = site.decide_rename(Rename("u", ENT, "/fw/a.log", "/secret/a.log", 10))
    missing = site.decide_rename(Rename("u", ENT, "/fw/a.log", "/nowhere/a.log", 10))
    assert hidden.reason == missing.reason == ABSENT
    assert hidden.hidden and missing.hidden
    assert "secret" in hidden.detail  # the audit keeps the full reason


def test_rename_outside_the_read_window(site: Policy) -> None:
    night = Policy(parse(SITE), clock=at("2026-11-24T20:00"))
    d = night.decide_rename(Rename("u", ENT, "/fw/a.log", "/fw/b.log", 10))
    assert not d.allowed and d.window_closed and "outside the window" in d.reason


def test_explain_rename_shows_both_halves(site: Policy) -> None:
    e = site.explain_rename(Rename("u", ENT, "/fw/fw.log", "/fw/fw.bin", 100_000))
    parts = [s.part for s in e.steps]
    assert parts[0] == "rename the old name" and parts[-1] == "write the new name"
    assert "read the old name" in parts
    assert e.new_path == "/fw/fw.bin" and not e.decision.allowed


OPS = [Op.LIST, Op.READ, Op.WRITE, Op.DELETE, Op.RENAME, Op.MKDIR]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("path", ["/secret", "/secret/a.log", "/secret/d/a.bin"])
def test_hidden_area_answers_like_a_missing_one(site: Policy, op: Op, path: str) -> None:
    hidden = site.decide(Request("u", ENT, op, path))
    missing = site.decide(Request("u", ENT, op, path.replace("secret", "nosuch")))
    assert (hidden.allowed, hidden.reason, hidden.hidden) == (False, ABSENT, True)
    assert (missing.allowed, missing.reason, missing.hidden) == (False, ABSENT, True)
    assert hidden.rule == "deny:hidden" and "no role of u grants anything" in hidden.detail


def test_area_without_any_conduit_is_hidden(site: Policy) -> None:
    """/plant is granted but no conduit joins ent and ctl in either direction."""
    d = site.decide(Request("u", ENT, Op.LIST, "/plant"))
    assert (d.reason, d.hidden) == (ABSENT, True)
    assert "no conduit between ent and ctl" in d.detail
    assert site.decide(Request("u", ip_address("10.0.2.9"), Op.LIST, "/plant")).allowed


def test_no_device_visible_reads_as_missing(site: Policy) -> None:
    d = site.decide(Request("u", ENT, Op.LIST, "/devices"))
    assert (d.allowed, d.reason, d.hidden) == (False, ABSENT, True)


def test_drop_folder_write_below_without_listing(site: Policy) -> None:
    """A write-only folder: writing into it is allowed; it cannot be listed."""
    below = site.decide(Request("u", ENT, Op.WRITE, "/drop/in", folder=True))
    assert below.allowed and below.conduit == "conduits[fw-bin]"
    assert site.decide(Request("u", ENT, Op.WRITE, "/drop", folder=True)).allowed
    assert not site.decide(Request("u", ENT, Op.WRITE, "/drop/out", folder=True)).allowed
    assert not site.decide(Request("u", ENT, Op.WRITE, "/drop")).allowed  # the root itself
    listing = site.decide(Request("u", ENT, Op.LIST, "/drop/in"))
    assert not listing.allowed and not listing.hidden  # the folder is known: say why
    assert listing.reason == "list not granted"


def test_window_closed_is_flagged_and_not_hidden(site: Policy) -> None:
    night = Policy(parse(SITE), clock=at("2026-11-24T19:00"))
    d = night.decide(Request("u", ENT, Op.READ, "/fw/a.log"))
    assert (d.allowed, d.window_closed, d.hidden) == (False, True, False)
    assert "outside the window of up" in d.reason
    pattern = night.decide(Request("u", ENT, Op.READ, "/fw/a.exe"))
    assert not pattern.window_closed  # a path no conduit matches: not a matter of time
