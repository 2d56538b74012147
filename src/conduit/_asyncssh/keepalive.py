"""The keepalive deadline moved, not the timer: tuning 13.

asyncssh restarts the keepalive timer on every read from the socket
(``SSHConnection._recv_data`` calls ``_reset_keepalive_timer``): the armed
``TimerHandle`` is cancelled and a new one pushed on the event loop's heap,
about a dozen Python calls (``call_later``, ``call_at``, the handle's
``__init__``, ``cancel``, the heap's comparisons, and the loop popping the
cancelled handle later). On a tree of small files that is four to five times
per file, for a keepalive that fires once a minute at most.

Here a reset only moves the deadline (``_keepalive_due``, one read of the
loop's clock) while the timer armed by the last reset is still pending;
when that timer fires before the deadline it is armed again for the
deadline, and only once the deadline has passed does asyncssh's own
``_keepalive_timer_callback`` run: the keepalive request goes out, or the
connection is closed, at the same moment as before (interval seconds after
the last data received), give or take one event-loop turn. Any other state
(no timer armed, a timer armed by asyncssh itself after a keepalive, an
interval changed by ``set_keepalive``, authentication not complete) takes
asyncssh's way: cancel and arm afresh. ``_cancel_keepalive_timer`` still
cancels whichever handle is armed, since it is kept in ``_keepalive_timer``.
tests/test_keepalive.py checks the deadlines on a real connection.
"""

from __future__ import annotations

from typing import Any

from asyncssh import connection as _connection

_SSHConnection = _connection.SSHConnection

ORIGINALS: dict[str, Any] = {
    "SSHConnection._reset_keepalive_timer": _SSHConnection._reset_keepalive_timer,
}

#: The private members the replacement reads, calls or stands beside.
USES: dict[str, Any] = {
    "SSHConnection._set_keepalive_timer": _SSHConnection._set_keepalive_timer,
    "SSHConnection._cancel_keepalive_timer": _SSHConnection._cancel_keepalive_timer,
    "SSHConnection._keepalive_timer_callback": _SSHConnection._keepalive_timer_callback,
    "SSHConnection.set_keepalive": _SSHConnection.set_keepalive,
    "SSHConnection._recv_data": _SSHConnection._recv_data,
}


def _reset_keepalive_timer(self: Any) -> None:
    if not self._auth_complete:
        return
    timer = self._keepalive_timer
    interval = self._keepalive_interval
    if (
        timer is not None
        and timer is getattr(self, "_keepalive_lazy", None)
        and interval == self._keepalive_lazy_interval
    ):
        self._keepalive_due = self._loop.time() + interval
        return
    self._cancel_keepalive_timer()
    if interval:
        _arm(self, self._loop.time() + interval, interval)


def _arm(self: Any, due: float, interval: float) -> None:
    self._keepalive_due = due
    self._keepalive_lazy_interval = interval
    self._keepalive_timer = self._keepalive_lazy = self._loop.call_at(due, _due, self)


def _due(self: Any) -> None:
    """The armed timer fired: armed again if data came since, else asyncssh's check."""
    if self._keepalive_timer is not self._keepalive_lazy:
        return  # superseded by a timer asyncssh armed itself
    due = self._keepalive_due
    if self._loop.time() < due:
        _arm(self, due, self._keepalive_lazy_interval)
        return
    self._keepalive_lazy = None
    self._keepalive_timer_callback()


PATCHES: dict[str, tuple[Any, str, Any]] = {
    "SSHConnection._reset_keepalive_timer": (
        _SSHConnection,
        "_reset_keepalive_timer",
        _reset_keepalive_timer,
    ),
}
