"""Bounds on what one client can make the gateway hold: handles and descriptors.

Every open SFTP handle (a file being read or written, an open listing) holds
a file descriptor and some memory until the client closes it, and a client
may simply never close them: 1,002 open read handles once used up the
process's descriptors, after which ``accept()`` failed with EMFILE for
everyone and the SIEM sink could not reconnect. Handles are therefore capped
per session and per user (:class:`HandleQuota`), and a reserve of descriptors
is kept free for what must never starve: the journal, its sinks and the
listening socket (:class:`Descriptors`). When the reserve is reached, new
handles, sessions and connections are refused with a clear message while
the ones already open carry on.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import Counter

log = logging.getLogger("conduit.gateway")

#: Where the kernel lists this process's open descriptors (Linux; /dev/fd elsewhere).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")
#: Listing them costs ~25 us at 50 descriptors. Far from the reserve (more than
#: HEADROOM free beyond it), a count is trusted for RECOUNT seconds: fewer than
#: HEADROOM handles can be opened in that time.
HEADROOM = 1024
RECOUNT = 0.05


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. macOS refuses RLIM_INFINITY
            log.warning("could not raise the open-file limit from %d to %s: %s", soft, hard, exc)
    return soft


class Descriptors:
    """This process's file descriptors, against a reserve kept free."""

    def __init__(self, reserve: int) -> None:
        self._dir = next((d for d in _FD_DIRS if os.path.isdir(d)), None)
        self._plenty_until = 0.0  # until then, no need to count again
        self.reserve = reserve

    @property
    def reserve(self) -> int:
        return self._reserve

    @reserve.setter
    def reserve(self, value: int) -> None:
        self._reserve = value
        self._plenty_until = 0.0  # a new reserve: count afresh

    @staticmethod
    def limit() -> int:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return soft if soft != resource.RLIM_INFINITY else 1 << 20

    def in_use(self) -> int:
        """Descriptors open now (0 where the system does not list them)."""
        if self._dir is None:
            return 0
        try:
            return len(os.listdir(self._dir)) - 1  # less the one listdir itself opened
        except OSError:
            return self.limit()  # cannot even list them: assume none is free

    def short(self) -> str | None:
        """Why nothing new may open a descriptor now, or None if it may."""
        if not self.reserve:
            return None
        now = time.monotonic()
        if now < self._plenty_until:
            return None
        free = self.limit() - self.in_use()
        if free <= self.reserve:
            return f"server out of file descriptors ({free} free, {self.reserve} kept in reserve)"
        if free > self.reserve + HEADROOM:
            self._plenty_until = now + RECOUNT
        return None


class HandleQuota:
    """One session's open SFTP handles, counted against its own cap and its user's."""

    def __init__(
        self,
        user: str,
        per_user: Counter[str],
        *,
        per_session_cap: int,
        per_user_cap: int,
        descriptors: Descriptors | None = None,
    ) -> None:
        self.user = user
        self.per_user = per_user
        self.per_session_cap = per_session_cap
        self.per_user_cap = per_user_cap
        self.descriptors = descriptors
        self.open = 0

    def acquire(self) -> str | None:
        """Count one more open handle; the reason if it may not be opened."""
        if self.open >= self.per_session_cap:
            return f"too many open handles in this session (limit {self.per_session_cap})"
        if self.per_user[self.user] >= self.per_user_cap:
            return f"too many open handles for this user (limit {self.per_user_cap})"
        if self.descriptors is not None:
            reason = self.descriptors.short()
            if reason is not None:
                return reason
        self.open += 1
        self.per_user[self.user] += 1
        return None

    def release(self) -> None:
        """A handle counted by :meth:`acquire` was closed."""
        if self.open <= 0:
            return
        self.open -= 1
        self.per_user[self.user] -= 1
        if self.per_user[self.user] <= 0:
            del self.per_user[self.user]
