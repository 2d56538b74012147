"""A listing asks the policy once per page when one answer holds for every name.

An SFTP listing (:class:`~conduit.gateway.listing.Listing`, a page of up to
128 entries at a time) and :meth:`Operations.listdir` used to ask the policy
about every entry, so a listed tree cost two decisions per file (the entry,
then the file's own read). Now each page first asks
:meth:`Policy.lists_every_name`; only where a pattern, a conduit's paths or a
closed window could tell names apart is each entry asked about. Hostile cases:
patterns that hide some names, a reload between two pages (both ways), a
conduit's window closing between two pages, a session revoked between pages.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path

import pytest

from conduit.config import parse
from conduit.errors import StorageError
from conduit.gateway.context import SessionInfo
from conduit.gateway.listing import PAGE, Listing, open_listing
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import resolve
from conduit.policy import Decision, Policy, Request
from conduit.storage.local import LocalBackend
from tests.gateway.test_read_decisions import KEY, PLANT_OFFICE, Site

SITE = (
    PLANT_OFFICE
    + """
[[conduits]]
name = "day"
from = "plant"
to = "office"
window = "daily 06:00-18:00"
"""
)

#: The same site where only ``tree/*.bin`` may be listed: what a reload might
#: bring. (A pattern without ``/`` such as ``*.bin`` hides no name from a
#: listing: any name could be a folder holding a ``.bin``.)
BINS_ONLY = SITE.replace(
    'ops = ["list", "read"] }}', 'ops = ["list", "read"], paths = ["tree/*.bin"] }}'
)
#: The same site whose conduit lets only ``out/tree/*.bin`` through.
BIN_CONDUIT = SITE.replace('window = "daily 06:00-18:00"', 'paths = ["out/tree/*.bin"]')

NAMES = [f"f{i:04d}.{'bin' if i % 3 == 0 else 'log'}" for i in range(2 * PAGE + 50)]
BINS = [n for n in NAMES if n.endswith(".bin")]


class Clock:
    """The policy's clock, set by the test."""

    def __init__(self, text: str) -> None:
        self.now = datetime.fromisoformat(text).replace(tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Counting(Policy):
    """A policy that counts the questions it is asked about single names."""

    decisions = 0

    def decide(self, request: Request) -> Decision:
        Counting.decisions += 1
        return super().decide(request)


def policy(text: str, root: Path, clock: Clock) -> Counting:
    return Counting(parse(text.format(root=root, key=KEY), source=root / "c.toml"), clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock("2026-12-04T12:00:00")


@pytest.fixture
def site(tmp_path: Path, clock: Clock) -> Site:
    folder = tmp_path / "out" / "tree"
    folder.mkdir(parents=True)
    for name in NAMES:
        (folder / name).write_bytes(b"x")
    os.mkfifo(tmp_path / "out" / "tree" / "bad\x1bname")  # a name the rule refuses
    first = policy(SITE, tmp_path, clock)
    return Site(first, {"out": LocalBackend("out", tmp_path / "out")})


def session(site: Site) -> Operations:
    return Operations(site, SessionInfo("s1", "alice", ip_address("10.0.0.5"), "office", "sftp"))


async def page(listing: Listing, count: int) -> list[str]:
    return [(await listing.__anext__()).filename.decode() for _ in range(count)]


async def rest(listing: Listing) -> list[str]:
    return [name.filename.decode() async for name in listing]


async def test_a_page_is_one_question_when_no_pattern_tells_names_apart(site: Site) -> None:
    ops = session(site)
    Counting.decisions = 0
    listing = await open_listing(ops, resolve("/out/tree"))
    names = await rest(listing)
    assert sorted(names) == NAMES  # the refused name is never shown
    assert Counting.decisions == 1  # the folder's own list: no question per entry
    Counting.decisions = 0
    assert sorted(e.name for e in await ops.listdir(resolve("/out/tree"))) == NAMES
    assert Counting.decisions == 1


@pytest.mark.parametrize("text", [BINS_ONLY, BIN_CONDUIT])
async def test_patterns_are_asked_about_each_name(site: Site, tmp_path: Path, text: str) -> None:
    site.policy = policy(text, tmp_path, Clock("2026-12-04T12:00:00"))
    ops = session(site)
    assert sorted(await rest(await open_listing(ops, resolve("/out/tree")))) == BINS
    assert sorted(e.name for e in await ops.listdir(resolve("/out/tree"))) == BINS


async def test_a_reload_between_pages_is_asked_again(site: Site, tmp_path: Path) -> None:
    ops = session(site)
    listing = await open_listing(ops, resolve("/out/tree"))
    await page(listing, 10)
    site.policy = policy(BINS_ONLY, tmp_path, Clock("2026-12-04T12:00:00"))
    later = await rest(listing)
    # the page read before the reload was answered by the old policy; every
    # page read after it by the new one: only *.bin names from there on
    shown_after_first_page = later[PAGE - 10 :]
    assert shown_after_first_page and all(n.endswith(".bin") for n in shown_after_first_page)


async def test_a_reload_that_lifts_patterns_between_pages(site: Site, tmp_path: Path) -> None:
    site.policy = policy(BINS_ONLY, tmp_path, Clock("2026-12-04T12:00:00"))
    ops = session(site)
    listing = await open_listing(ops, resolve("/out/tree"))
    first = await page(listing, 5)
    assert all(n.endswith(".bin") for n in first)
    site.policy = policy(SITE, tmp_path, Clock("2026-12-04T12:00:00"))
    later = await rest(listing)
    assert any(n.endswith(".log") for n in later)


async def test_a_window_closing_between_pages_hides_the_next(site: Site, clock: Clock) -> None:
    ops = session(site)
    listing = await open_listing(ops, resolve("/out/tree"))
    await page(listing, 10)
    clock.now = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)  # the window has closed
    later = await rest(listing)
    assert len(later) == PAGE - 10  # the rest of the page read while it was open, no more
    with pytest.raises(StorageError):
        await ops.listdir(resolve("/out/tree"))


async def test_a_session_revoked_between_pages_is_served_no_more(site: Site) -> None:
    ops = session(site)
    listing = await open_listing(ops, resolve("/out/tree"))
    await page(listing, PAGE)  # the whole first page
    ops.traffic.revoked = "alice removed"
    with pytest.raises(StorageError, match="revoked"):
        await listing.__anext__()
    with pytest.raises(StorageError, match="revoked"):
        await ops.listdir(resolve("/out/tree"))
