"""The question and the answer: :class:`Request`, :class:`Decision`, :class:`Explanation`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address

from conduit.config.model import Obligation, Op

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Request:
    """One question: may ``user`` from ``source`` do ``op`` on virtual ``path``?"""

    user: str
    source: IPAddress
    op: Op
    path: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer. ``reason`` is for the client, ``detail`` for the audit."""

    allowed: bool
    rule: str
    reason: str
    detail: str
    obligations: frozenset[Obligation] = field(default_factory=frozenset)
    max_size: int | None = None
    grant: str | None = None  # the grant that allowed, e.g. roles.engineer.grants[0]
    conduit: str | None = None  # the conduit that allowed, e.g. conduits[firmware-down]
    client_zone: str | None = None
    target_zone: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One line of an explanation: which question, its answer, and why."""

    question: str
    ok: bool
    rule: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision plus every step that led to it (for ``conduit explain``)."""

    request: Request
    decision: Decision
    steps: tuple[Step, ...]
    at: datetime
