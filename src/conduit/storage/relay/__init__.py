"""The relay backend: a device served as ``/devices/NAME`` over SFTP or legacy SCP.

``open_device(name, device, state_dir)`` gives the gateway a
:class:`~conduit.storage.base.Backend` for one device. Paths map to the
device's ``root`` (``/devices/plc-01/x`` is ``ROOT/x`` there). SFTP is
preferred; a device that lists only ``scp`` (or whose SFTP subsystem is
refused while ``scp`` is also listed) is driven by the relay's own legacy SCP
client. Write handles expose ``atomic`` and, after :meth:`commit`,
``device_sha256``, ``local_sha256`` and ``custody`` for the audit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from conduit.config.model import DeviceConfig
from conduit.errors import DeviceFailure, Fault, StorageError
from conduit.storage.base import Entry, ReadHandle, RelPath, Space, Stat
from conduit.storage.relay import commands
from conduit.storage.relay.connection import DeviceLink, acquire_link, release_link
from conduit.storage.relay.custody import CustodyReceipt
from conduit.storage.relay.failures import Reporter
from conduit.storage.relay.scp import ScpDevice, ScpWriteHandle
from conduit.storage.relay.sftp import SftpDevice, SftpWriteHandle

__all__ = [
    "CustodyReceipt",
    "DeviceFailure",
    "RelayBackend",
    "RelayWriteHandle",
    "open_device",
]

log = logging.getLogger("conduit.relay")

SPOOL_DIR = "relay-spool"

RelayWriteHandle = SftpWriteHandle | ScpWriteHandle
"""What :meth:`RelayBackend.open_write` returns; both carry the custody fields."""


class RelayBackend:
    """One relayed device, implementing :class:`conduit.storage.base.Backend`.

    Backends for the same device (same name and config) in one event loop
    share one SSH connection. ``spool_limit`` caps a legacy SCP upload's
    spool file in bytes (None: the spool disk is the limit). ``on_failure``
    is told of each failed connect to the device (see ``failures.py``).
    """

    def __init__(
        self,
        name: str,
        device: DeviceConfig,
        *,
        state_dir: Path,
        spool_limit: int | None = None,
        on_failure: Reporter | None = None,
        on_connect: Callable[[DeviceLink], None] | None = None,
    ) -> None:
        if not device.root.startswith("/"):
            raise ValueError(f"device {name}: root must be an absolute path")
        for operation, template in device.commands.items():
            commands.check_template(operation, template)
        self.name = name
        self.device = device
        self.state_dir = state_dir
        self.spool_limit = spool_limit
        self.on_failure = on_failure
        self.on_connect = on_connect
        self._link: DeviceLink | None = None
        self._impl: SftpDevice | ScpDevice | None = None
        self._choose = asyncio.Lock()

    @property
    def link(self) -> DeviceLink:
        if self._link is None:
            self._link = acquire_link(self.name, self.device, self.state_dir)
            if self.on_failure is not None:
                self._link.report = self.on_failure
            if self.on_connect is not None:
                self._link.on_connect = self.on_connect
        return self._link

    @property
    def protocol(self) -> str | None:
        """``"sftp"`` or ``"scp"`` once the first operation chose one."""
        if self._impl is None:
            return None
        return "sftp" if isinstance(self._impl, SftpDevice) else "scp"

    def _scp(self) -> ScpDevice:
        return ScpDevice(self.link, self.device.root, self.state_dir / SPOOL_DIR, self.spool_limit)

    async def _device(self) -> SftpDevice | ScpDevice:
        if self._impl is not None:
            return self._impl
        async with self._choose:
            if self._impl is None:
                protocols = self.device.protocols
                if "sftp" not in protocols:
                    self._impl = self._scp()
                else:
                    try:
                        await self.link.sftp()
                        self._impl = SftpDevice(self.link, self.device.root)
                    except StorageError as exc:
                        if exc.fault is not Fault.UNSUPPORTED or "scp" not in protocols:
                            raise
                        log.warning("device %s: no SFTP service, using legacy SCP", self.name)
                        self._impl = self._scp()
            return self._impl

    async def stat(self, path: RelPath) -> Stat:
        return await (await self._device()).stat(path)

    async def listdir(self, path: RelPath) -> list[Entry]:
        return await (await self._device()).listdir(path)

    async def open_read(self, path: RelPath) -> ReadHandle:
        return await (await self._device()).open_read(path)

    async def open_write(self, path: RelPath, *, mode: int = 0o644) -> RelayWriteHandle:
        return await (await self._device()).open_write(path, mode=mode)

    async def mkdir(self, path: RelPath, *, mode: int = 0o755) -> None:
        await (await self._device()).mkdir(path, mode=mode)

    async def rmdir(self, path: RelPath) -> None:
        await (await self._device()).rmdir(path)

    async def remove(self, path: RelPath) -> None:
        await (await self._device()).remove(path)

    async def rename(self, old: RelPath, new: RelPath, *, overwrite: bool) -> None:
        await (await self._device()).rename(old, new, overwrite=overwrite)

    async def set_times(self, path: RelPath, atime: float, mtime: float) -> None:
        await (await self._device()).set_times(path, atime, mtime)

    async def statvfs(self, path: RelPath) -> Space:
        # A device's free space is its own business (and many cannot say).
        raise StorageError(Fault.UNSUPPORTED, "no space information for devices")

    async def close(self) -> None:
        link, self._link, self._impl = self._link, None, None
        if link is not None:
            await release_link(link)


def open_device(
    name: str,
    device: DeviceConfig,
    state_dir: Path,
    on_failure: Reporter | None = None,
    on_connect: Callable[[DeviceLink], None] | None = None,
) -> RelayBackend:
    """The backend for device ``name`` (SFTP preferred, legacy SCP otherwise)."""
    return RelayBackend(
        name, device, state_dir=state_dir, on_failure=on_failure, on_connect=on_connect
    )
