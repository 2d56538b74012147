"""Choosing the conduit that lets a flow through, or the best reason none does.

Pure. Conduits for one (from zone, to zone) pair are tried in file order: the
first whose ``paths`` match, whose ``window`` is open now and whose
``max_size`` the known size fits, allows. When none does, the candidate that
got furthest (path, then window, then size) explains the denial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from conduit.config.model import ConduitConfig, Obligation
from conduit.policy.patterns import PathPattern
from conduit.policy.windows import Window


@dataclass(frozen=True, slots=True)
class CompiledConduit:
    rule: str
    config: ConduitConfig
    patterns: tuple[PathPattern, ...]
    windows: tuple[Window, ...]
    max_size: int | None
    obligations: frozenset[Obligation]


@dataclass(frozen=True, slots=True)
class Miss:
    """No conduit allows it: the one that came closest, a client reason, an audit reason."""

    conduit: CompiledConduit
    reason: str
    why: str
    closed: bool = False  # the paths matched; only the window said no


def first_open(
    conduits: list[CompiledConduit],
    parts: tuple[str, ...],
    directory: bool,
    size: int | None,
    now: Callable[[], datetime],
    timezone: str,
    flow: str,
) -> CompiledConduit | Miss:
    """The first conduit that allows the flow for ``parts`` now, or the best :class:`Miss`.

    ``directory``: the path is a folder (list/mkdir), allowed where a pattern
    could match something below it. ``now`` is called only if a window is checked.
    """
    vrel = "/".join(parts)
    best: tuple[int, Miss] | None = None  # (how far the candidate got, its miss)
    minute: int | None = None
    moment: datetime | None = None
    for conduit in conduits:
        if conduit.patterns and not any(
            p.could_contain(parts) if directory else p.matches(vrel, parts[-1])
            for p in conduit.patterns
        ):
            if best is None:
                best = (
                    0,
                    Miss(
                        conduit,
                        f"no conduit {flow} for this path",
                        f"{conduit.rule} paths {conduit.config.paths} do not match {vrel!r}",
                    ),
                )
            continue
        if conduit.windows:
            if moment is None:
                moment = now()
                minute = moment.weekday() * 1440 + moment.hour * 60 + moment.minute
            assert minute is not None
            if not any(w.contains(minute) for w in conduit.windows):
                if best is None or best[0] < 1:
                    windows = ", ".join(w.text for w in conduit.windows)
                    best = (
                        1,
                        Miss(
                            conduit,
                            f"outside the window of {conduit.config.name}",
                            f"{conduit.rule} is open {windows} ({timezone}),"
                            f" now is {moment:%a %H:%M}",
                            closed=True,
                        ),
                    )
                continue
        if conduit.max_size is not None and size is not None and size > conduit.max_size:
            if best is None or best[0] < 2:
                best = (
                    2,
                    Miss(
                        conduit,
                        f"file larger than {conduit.max_size} bytes",
                        f"{conduit.rule} max_size {conduit.max_size} < size {size}",
                    ),
                )
            continue
        return conduit
    assert best is not None  # conduits is non-empty and every miss records one
    return best[1]
