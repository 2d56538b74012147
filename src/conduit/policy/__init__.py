"""Zones, conduits, principals, areas and devices; ``decide()`` and ``explain()``.

Pure: no I/O, no asyncssh. The gateway asks ``Policy.decide(Request)`` before
every operation and enforces the returned :class:`Decision`. The semantics are
documented in :mod:`conduit.policy.engine`.
"""

from conduit.policy.decision import ABSENT
from conduit.policy.engine import Decision, Explanation, Policy, PolicyError, Request, Step
from conduit.policy.patterns import PathPattern, normalise, pattern_problem
from conduit.policy.rename import Rename
from conduit.policy.windows import Window, WindowError, parse_window, parse_windows

__all__ = [
    "ABSENT",
    "Decision",
    "Explanation",
    "PathPattern",
    "Policy",
    "PolicyError",
    "Rename",
    "Request",
    "Step",
    "Window",
    "WindowError",
    "normalise",
    "parse_window",
    "parse_windows",
    "pattern_problem",
]
