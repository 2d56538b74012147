"""Hypothesis properties of ``Policy.decide`` over generated policies and requests."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, ip_address
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conduit.config import Config, Op
from conduit.policy import PathPattern, Policy, Request, normalise

ZONES = ["z1", "z2", "z3"]
NETS = {"z1": "10.1.0.0/16", "z2": "10.2.0.0/16", "z3": "10.3.0.0/16"}
AREAS = ["inbox", "fw", "logs"]
DEVICES = ["plc-01", "plc-02", "rtu-1"]
NAMES = ["a.bin", "b.log", "c.csv", "sub", "cfg", "x.img"]
PATTERNS = ["*.bin", "*.log", "sub/*", "cfg/*.csv", "**", "?.img", "[ab].*", "sub/**"]
WINDOWS = [None, "Sat 02:00-06:00", "Mon-Fri 22:00-05:00", ["Sun 00:00-24:00", "daily 12:00-13:00"]]
FIXED = datetime(2026, 11, 28, 3, 30, tzinfo=UTC)

# approve is decided on the host, never for a client request (see policy/approve.py)
ops = st.sampled_from([o for o in Op if o is not Op.APPROVE])
targets = st.sampled_from([*AREAS, "devices/plc-*", "devices/*", "devices/rtu-1"])
grants = st.fixed_dictionaries(
    {
        "target": targets,
        "ops": st.lists(ops, min_size=1, max_size=3),
        "paths": st.lists(st.sampled_from(PATTERNS), max_size=2),
    }
)
conduits = st.fixed_dictionaries(
    {
        "from": st.sampled_from(ZONES),
        "to": st.sampled_from(ZONES),
        "paths": st.lists(st.sampled_from(PATTERNS), max_size=2),
        "max_size": st.one_of(st.none(), st.integers(0, 5000)),
        "window": st.sampled_from(WINDOWS),
        "require": st.lists(st.sampled_from(["signature", "scan", "approval"]), max_size=2),
    }
)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    roles = {f"r{i}": {"grants": draw(st.lists(grants, max_size=4))} for i in range(3)}
    return {
        "zones": {z: {"level": 3 - i, "networks": [NETS[z]]} for i, z in enumerate(ZONES)},
        "areas": {a: {"zone": draw(st.sampled_from(ZONES)), "path": a} for a in AREAS},
        "devices": {
            d: {"zone": draw(st.sampled_from(ZONES)), "address": "10.9.9.9:22", "user": "x"}
            for d in DEVICES
        },
        "roles": roles,
        "users": {"u": {"keys": ["k"], "roles": draw(st.lists(st.sampled_from(list(roles))))}},
        "conduits": [
            {"name": f"c{i}", **c}
            for i, c in enumerate(draw(st.lists(conduits, max_size=4)))
            if c["from"] != c["to"]
        ],
    }


paths = st.lists(
    st.sampled_from(AREAS + DEVICES + NAMES + ["devices", "..", ".", ""]), max_size=6
).map(lambda parts: "/" + "/".join(parts))
zoned = st.sampled_from(ZONES).flatmap(
    lambda z: st.integers(0, 2**16 - 1).map(
        lambda n: ip_address(int(ip_address(NETS[z].split("/")[0])) + n)
    )
)
requests = st.builds(
    Request,
    user=st.just("u"),
    source=zoned,
    op=ops,
    path=paths,
    size=st.one_of(st.none(), st.integers(0, 10_000)),
)


def build(data: dict[str, Any]) -> Policy:
    return Policy(Config.model_validate(data), clock=lambda: FIXED)


@settings(max_examples=300, deadline=None)
@given(configs(), requests, grants, st.integers(0, 2), st.integers(0, 4))
def test_adding_a_grant_never_turns_allow_into_deny(
    data: dict[str, Any], request: Request, grant: dict[str, Any], role: int, position: int
) -> None:
    before = build(data).decide(request)
    grown = data["roles"][f"r{role}"]["grants"]
    grown.insert(min(position, len(grown)), grant)
    if f"r{role}" not in data["users"]["u"]["roles"]:
        data["users"]["u"]["roles"].append(f"r{role}")
    after = build(data).decide(request)
    if before.allowed:
        assert after.allowed, (before.detail, after.detail)


@settings(max_examples=300, deadline=None)
@given(configs(), requests, st.integers(0, 2**32 - 1))
def test_an_address_in_no_zone_is_always_denied(
    data: dict[str, Any], request: Request, address: int
) -> None:
    source = IPv4Address(address)
    policy = build(data)
    if policy.zone_of(source) is not None:
        return
    decision = policy.decide(Request(request.user, source, request.op, request.path, request.size))
    assert not decision.allowed
    assert decision.rule == "deny:no-zone"


@settings(max_examples=300, deadline=None)
@given(configs(), requests)
def test_dotdot_never_matches_more_than_its_normalised_form(
    data: dict[str, Any], request: Request
) -> None:
    policy = build(data)
    clean = "/" + "/".join(normalise(request.path))
    raw = policy.decide(request)
    normal = policy.decide(Request(request.user, request.source, request.op, clean, request.size))
    if raw.allowed:
        assert normal.allowed
    assert (raw.allowed, raw.rule, raw.obligations) == (
        normal.allowed,
        normal.rule,
        normal.obligations,
    )


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.bin"]), max_size=8))
def test_normalise_never_leaves_the_root(parts: list[str]) -> None:
    result = normalise("/".join(parts))
    assert all(p not in ("", ".", "..") for p in result)


@given(st.lists(st.sampled_from(["a", "b.bin", "x"]), min_size=2, max_size=4))
def test_star_never_crosses_a_slash(parts: list[str]) -> None:
    rel = "/".join(parts)
    assert not PathPattern.compile("*").matches(rel, rel)  # anchored use: whole path
    assert PathPattern.compile("**").matches(rel, parts[-1])
    assert PathPattern.compile("*").matches(rel, parts[-1])  # last component


@settings(max_examples=300, deadline=None)
@given(
    configs(),
    zoned,
    paths,
    paths,
    st.one_of(st.none(), st.integers(0, 10_000)),
    st.booleans(),
    st.booleans(),
)
def test_a_rename_never_allows_what_a_read_and_a_write_would_not(
    data: dict[str, Any],
    source: Any,
    old: str,
    new: str,
    size: int | None,
    folder: bool,
    replaces: bool,
) -> None:
    from conduit.policy import Rename

    policy = build(data)
    decision = policy.decide_rename(Rename("u", source, old, new, size, folder, replaces))
    if not decision.allowed:
        return
    read, write = (Op.LIST, Op.MKDIR) if folder else (Op.READ, Op.WRITE)
    size = None if folder else size
    assert policy.decide(Request("u", source, read, old, size)).allowed
    assert policy.decide(Request("u", source, write, new, size)).allowed
    assert policy.decide(Request("u", source, Op.RENAME, old, folder=folder)).allowed
    assert policy.decide(Request("u", source, Op.RENAME, new, folder=folder)).allowed
    if replaces:
        assert policy.decide(Request("u", source, Op.DELETE, new)).allowed


@settings(max_examples=300, deadline=None)
@given(configs(), requests)
def test_hidden_answers_are_the_missing_answer(data: dict[str, Any], request: Request) -> None:
    from conduit.policy import ABSENT

    policy = build(data)
    decision = policy.decide(request)
    if decision.hidden:
        assert not decision.allowed and decision.reason == ABSENT
    parts = normalise(request.path)
    if parts and parts[0] not in (*AREAS, "devices"):
        assert decision.hidden or decision.rule in ("deny:no-zone", "deny:unknown-user")


CLOCKS = [
    FIXED,
    datetime(2026, 11, 30, 23, 10, tzinfo=UTC),
    datetime(2026, 12, 2, 12, 30, tzinfo=UTC),
]
SOURCES = [ip_address(NETS[z].split("/")[0]) for z in ZONES]
FOLDERS = [
    "/",
    "/devices",
    "/nowhere",
    *(f"/{t}{sub}" for t in [*AREAS, *(f"devices/{d}" for d in DEVICES)] for sub in ("", "/sub")),
]


@st.composite
def listing_sites(draw: st.DrawFn) -> dict[str, Any]:
    """:func:`configs` whose user has every role, often with a ``list`` grant and
    a conduit without paths (what makes every name of a folder listable), so
    that both answers are common, or with paths that tell a folder's names apart."""
    data = draw(configs())
    data["users"]["u"]["roles"] = list(data["roles"])
    if draw(st.booleans()):
        grant = {"target": draw(targets), "ops": ["list"], "paths": []}
        data["roles"]["r0"]["grants"].insert(draw(st.integers(0, 4)), grant)
    if draw(st.booleans()):
        pair = draw(st.permutations(ZONES))
        window = draw(st.sampled_from(WINDOWS))
        paths = draw(st.sampled_from([[], [], ["inbox/sub/*"], ["fw/*.bin", "logs/**"]]))
        conduit = {"name": "open", "from": pair[0], "to": pair[1], "paths": paths, "window": window}
        data["conduits"].insert(draw(st.integers(0, 4)), conduit)
    return data


@settings(max_examples=150, deadline=None)
@given(listing_sites())
def test_a_folder_listable_by_every_name_lists_each_name(data: dict[str, Any]) -> None:
    """``lists_every_name`` (one answer per listing page) never lets a listing
    show a name that asking about that name would hide; and it is never said of
    a folder the user may not list, nor of ``/`` or ``/devices`` (whose names
    are targets of their own). Every folder, source zone and clock is tried."""
    for now in CLOCKS:
        policy = Policy(Config.model_validate(data), clock=lambda now=now: now)
        for source in SOURCES:
            for folder in FOLDERS:
                if not policy.lists_every_name("u", source, folder):
                    continue
                assert folder not in ("/", "/devices", "/nowhere")
                listed = policy.decide(Request("u", source, Op.LIST, folder, folder=True))
                assert listed.allowed, listed.detail
                for name in [*NAMES, *AREAS, *DEVICES, "devices"]:
                    child = policy.decide(Request("u", source, Op.LIST, f"{folder}/{name}"))
                    assert child.allowed, child.detail
