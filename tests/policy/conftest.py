"""Shared fixtures: the example policy (a four-zone site, a few users) at a fixed time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conduit.config import Config, Obligation, Op, load
from conduit.policy import Decision, Policy, Request

HERE = Path(__file__).parent
EXAMPLE = HERE / "example.toml"
BERLIN = ZoneInfo("Europe/Berlin")
# Saturday 2026-11-28 03:30 in Berlin: inside "Sat 02:00-06:00".
SATURDAY_NIGHT = datetime(2026, 11, 28, 3, 30, tzinfo=BERLIN)
#: The tables test what the file means: as if every obligation could be met.
#: What the gateway does today (refuse what it cannot enforce) has its own tests.
EVERY_OBLIGATION = frozenset(Obligation)


def at(text: str) -> Callable[[], datetime]:
    """A clock frozen at ``text`` (ISO, Berlin wall clock), returning UTC like the real one."""
    moment = datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(UTC)
    return lambda: moment


@pytest.fixture(scope="session")
def example_config() -> Config:
    return load(EXAMPLE)


@pytest.fixture
def policy(example_config: Config) -> Policy:
    return Policy(
        example_config,
        clock=lambda: SATURDAY_NIGHT.astimezone(UTC),
        enforceable=EVERY_OBLIGATION,
    )


def ask(
    policy: Policy, user: str, source: str, op: str, path: str, size: int | None = None
) -> Decision:
    return policy.decide(Request(user, ip_address(source), Op(op), path, size))
