"""The question and the answer: :class:`Request`, :class:`Decision`, :class:`Explanation`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address

from conduit.config.model import Obligation, Op

IPAddress = IPv4Address | IPv6Address

#: What the client hears for anything it may not see: the storage's words for
#: a name that does not exist, so the two cannot be told apart.
ABSENT = "no such file or directory"


@dataclass(frozen=True, slots=True)
class Request:
    """One question: may ``user`` from ``source`` do ``op`` on virtual ``path``?"""

    user: str
    source: IPAddress
    op: Op
    path: str
    size: int | None = None
    # ``path`` is a folder: patterns allow it where they could match it or
    # something below it. For ``write`` the question is whether a file may be
    # written into it (a drop folder's stat, cd and scp target check).
    folder: bool = False


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
    # The user may not know the path exists: the client must get exactly what
    # a missing name gets (``reason`` is then :data:`ABSENT`).
    hidden: bool = False
    # Denied only because the conduit's window is closed now: the path is one
    # the user may use at another time, so they may be told why.
    window_closed: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One line of an explanation: which question, its answer, and why."""

    question: str
    ok: bool
    rule: str | None
    text: str
    part: str = ""  # which half of a rename this step belongs to ("" for one request)


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision plus every step that led to it (for ``conduit explain``)."""

    request: Request
    decision: Decision
    steps: tuple[Step, ...]
    at: datetime
    new_path: str | None = None  # a rename's new name (``request.path`` is the old one)
