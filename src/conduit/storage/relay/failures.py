"""Why the relay could not reach a device, as a code the gateway can act on.

A wrong pinned host key (a possible man in the middle), a missing key file,
refused credentials and a device that is down used to reach the client as a
bare ``Failure`` and nobody else. Each connect failure is now a
:class:`~conduit.errors.DeviceFailure`: a :class:`~conduit.errors.StorageError` (so
everything that handled those still does) that also carries

- ``code``: ``host_key_mismatch``, ``host_key_unknown``, ``host_key_unusable``,
  ``key_missing``, ``credentials_missing``, ``auth_refused``, ``unreachable``,
  ``timeout`` or ``failed`` (anything else);
- ``alert``: whether it may be an attack (a host key mismatch) rather than an
  outage;
- ``sftp_status``: the SFTP status that tells a client best what happened
  (``SSH_FX_NO_CONNECTION`` when no connection could be made,
  ``SSH_FX_CONNECTION_LOST`` when the gateway dropped one it could not trust,
  ``SSH_FX_PERMISSION_DENIED`` when the device refused the gateway).

The reason stays short and safe for a client; the detail names the device and
(for a mismatch) the fingerprint the device presented, never a password, a
key path or the SSH library's exception text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncssh

from conduit.errors import (
    FX_CONNECTION_LOST,
    FX_PERMISSION_DENIED,
    DeviceFailure,
    StorageError,
)

MISMATCH_REASON = "device host key does not match the pinned key"


Reporter = Callable[[str, DeviceFailure], Awaitable[None]]
"""Told of each connect failure (device name, failure); the gateway journals it."""


def connect_failure(name: str, exc: BaseException, presented: str | None = None) -> DeviceFailure:
    """The :class:`DeviceFailure` for an exception raised while connecting to
    device ``name``; ``presented`` is the fingerprint of the host key the
    device showed, if it showed one the gateway did not trust."""
    if isinstance(exc, DeviceFailure):
        return exc
    where = f"device {name}: connect"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        seen = f"; it presented {presented}" if presented else ""
        return DeviceFailure(
            "host_key_mismatch",
            MISMATCH_REASON,
            f"{where}: host key not trusted (pinned key mismatch{seen}): "
            "possible man in the middle",
            sftp_status=FX_CONNECTION_LOST,
            alert=True,
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return DeviceFailure(
            "auth_refused",
            "device refused the gateway's credentials",
            f"{where}: authentication failed",
            sftp_status=FX_PERMISSION_DENIED,
        )
    if isinstance(exc, asyncssh.KeyImportError):
        return key_missing(name, "cannot be loaded")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return DeviceFailure("timeout", "device did not answer in time", f"{where}: timeout")
    if isinstance(exc, OSError | ConnectionError):
        return DeviceFailure("unreachable", "device unreachable", f"{where}: {type(exc).__name__}")
    if isinstance(exc, asyncssh.Error | EOFError):
        return DeviceFailure(
            "unreachable",
            "device unavailable",
            f"{where}: {type(exc).__name__}",
            sftp_status=FX_CONNECTION_LOST,
        )
    if isinstance(exc, StorageError):  # the relay's own refusals before connecting
        return DeviceFailure("failed", exc.reason, exc.detail)
    return DeviceFailure("failed", "device unavailable", f"{where}: {type(exc).__name__}")


def key_missing(name: str, what: str) -> DeviceFailure:
    return DeviceFailure(
        "key_missing",
        "the gateway's key for this device is missing",
        f"device {name}: identity file {what}",
    )
