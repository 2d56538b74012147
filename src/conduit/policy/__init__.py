"""Zones, conduits, principals, areas and devices; ``decide()`` and ``explain()``.

Pure: no I/O, no asyncssh. The gateway asks ``Policy.decide(Request)`` before
every operation and enforces the returned :class:`Decision`.
"""

from conduit.policy.engine import Decision, Policy, Request

__all__ = ["Decision", "Policy", "Request"]
