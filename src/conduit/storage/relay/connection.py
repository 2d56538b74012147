"""One SSH connection per device, shared by every session that relays to it.

A :class:`DeviceLink` owns the asyncssh client connection to one device: it
connects lazily, pins the device's host key, caps how many operations run on
the device at once (``max_concurrency``), and reconnects after a failure.
Every asyncssh or OS error leaving this package goes through
:func:`device_error` (or, while connecting,
:func:`~conduit.storage.relay.failures.connect_failure`, which also gives the
cause a code and tells ``DeviceLink.report``), so a client only ever sees a
short :class:`~conduit.storage.base.StorageError` and never a password, key
path or remote path.

Host key trust, in order: the pinned ``host_key``, then the device's
``known_hosts`` file, then (only with ``trust_on_first_use``) the key first
seen, which is then stored in ``STATE_DIR/relay_known_hosts`` (OpenSSH
``known_hosts`` format, so ``ssh-keygen -F '[host]:port' -f`` reads it) and
pinned from then on. With none of these the device is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh

from conduit.config.crypto import effective, negotiated
from conduit.config.model import DeviceConfig
from conduit.errors import DeviceFailure, Fault, StorageError
from conduit.storage.relay.failures import (
    Reporter,
    connect_failure,
    key_missing,
)

log = logging.getLogger("conduit.relay")

TOFU_FILE = "relay_known_hosts"
KEEPALIVE_INTERVAL = 15.0
"""Seconds between keepalives; a cut link is noticed after ~3 of them."""
KEEPALIVE_COUNT_MAX = 3
DEFAULT_SLOT_TIMEOUT = 300.0
"""How long an operation waits for a free ``max_concurrency`` slot."""

_SFTP_FAULTS: dict[type[asyncssh.SFTPError], Fault] = {
    asyncssh.SFTPNoSuchFile: Fault.NOT_FOUND,
    asyncssh.SFTPNoSuchPath: Fault.NOT_FOUND,
    asyncssh.SFTPPermissionDenied: Fault.FORBIDDEN,
    asyncssh.SFTPWriteProtect: Fault.FORBIDDEN,
    asyncssh.SFTPFileAlreadyExists: Fault.EXISTS,
    asyncssh.SFTPDirNotEmpty: Fault.NOT_EMPTY,
    asyncssh.SFTPNotADirectory: Fault.NOT_A_DIRECTORY,
    asyncssh.SFTPFileIsADirectory: Fault.IS_A_DIRECTORY,
    asyncssh.SFTPOpUnsupported: Fault.UNSUPPORTED,
    asyncssh.SFTPNoSpaceOnFilesystem: Fault.NO_SPACE,
    asyncssh.SFTPQuotaExceeded: Fault.NO_SPACE,
    asyncssh.SFTPNoConnection: Fault.UNAVAILABLE,
    asyncssh.SFTPConnectionLost: Fault.UNAVAILABLE,
}


def device_error(name: str, exc: BaseException, action: str) -> StorageError:
    """Turn any failure talking to device ``name`` into a StorageError.

    The reason is short and generic; the detail names the device, the action
    and the error class, never credentials or remote paths.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, asyncssh.SFTPError):
        fault = _SFTP_FAULTS.get(type(exc), Fault.FAILURE)
        reason = "device unavailable" if fault is Fault.UNAVAILABLE else fault.value
        return StorageError(fault, reason, f"device {name}: {action}: {type(exc).__name__}")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return StorageError(
            Fault.UNAVAILABLE,
            "device host key does not match the pinned key",
            f"device {name}: {action}: host key not trusted (pinned key mismatch)",
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return StorageError(
            Fault.UNAVAILABLE,
            "device refused the gateway's credentials",
            f"device {name}: {action}: authentication failed",
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return StorageError(
            Fault.UNAVAILABLE, "device did not answer in time", f"device {name}: {action}: timeout"
        )
    if isinstance(exc, asyncssh.Error | OSError | EOFError | ConnectionError):
        return StorageError(
            Fault.UNAVAILABLE,
            "device unavailable",
            f"device {name}: {action}: {type(exc).__name__}",
        )
    return StorageError(
        Fault.FAILURE, "device operation failed", f"device {name}: {action}: {type(exc).__name__}"
    )


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` / ``"[v6]:port"`` / ``"host"`` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        return address.strip("[]"), 22
    return host.strip("[]"), int(port)


def _known_hosts_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def read_secret(device: DeviceConfig) -> str | None:
    """The device password from its file or environment variable, if any."""
    if device.password_file is not None:
        try:
            return device.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise DeviceFailure(
                "credentials_missing",
                "device credentials unreadable",
                f"password_file: {type(exc).__name__}",
            ) from None
    if device.password_env is not None:
        value = os.environ.get(device.password_env)
        if value is None:
            raise DeviceFailure(
                "credentials_missing",
                "device credentials missing",
                f"environment variable {device.password_env} is not set",
            )
        return value
    return None


class _Client(asyncssh.SSHClient):
    """Remembers the host key the device presented (for trust on first use)."""

    def __init__(self, first_use: bool) -> None:
        self.first_use = first_use
        self.server_key: asyncssh.SSHKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # asyncssh asks here for any key its known_hosts did not vouch for:
        # accept only when nothing is pinned yet and TOFU is enabled (the key
        # is kept either way: a mismatch is reported with its fingerprint).
        self.server_key = key
        return self.first_use


class DeviceLink:
    """The shared connection to one device, with its concurrency cap."""

    def __init__(
        self,
        name: str,
        device: DeviceConfig,
        state_dir: Path,
        *,
        slot_timeout: float = DEFAULT_SLOT_TIMEOUT,
    ) -> None:
        self.name = name
        self.device = device
        self.state_dir = state_dir
        self.host, self.port = split_address(device.address)
        self.slot_timeout = slot_timeout
        self.connects = 0
        """How many SSH connections were opened so far (tests, metrics)."""
        self.algorithms: dict[str, str | None] = {}
        """The algorithms the last connection agreed on (kex, host key, cipher, MAC)."""
        self.on_connect: Callable[[DeviceLink], None] | None = None
        """Told of each new connection (the gateway journals it)."""
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(device.max_concurrency)
        self.report: Reporter | None = None
        """Told of each failed connect (the gateway journals it)."""

    @property
    def tofu_file(self) -> Path:
        return self.state_dir / TOFU_FILE

    # -- host keys -----------------------------------------------------------

    def _trusted_keys(self) -> list[asyncssh.SSHKey]:
        keys: list[asyncssh.SSHKey] = []
        if self.device.host_key:
            try:
                keys.append(asyncssh.import_public_key(self.device.host_key))
            except (asyncssh.KeyImportError, ValueError):
                raise DeviceFailure(
                    "host_key_unusable",
                    "device host key in the policy is malformed",
                    f"device {self.name}: host_key cannot be parsed",
                ) from None
        sources = [self.device.known_hosts] if self.device.known_hosts else []
        if self.device.trust_on_first_use:
            sources.append(self.tofu_file)
        for source in sources:
            if not source.is_file():
                continue
            try:
                found = asyncssh.read_known_hosts(str(source)).match(
                    self.host, self.host, self.port
                )
            except (OSError, ValueError, asyncssh.Error):
                raise DeviceFailure(
                    "host_key_unusable",
                    "device known_hosts unreadable",
                    f"device {self.name}: known_hosts file cannot be read",
                ) from None
            keys.extend(found[0])
        return keys

    def _store_first_key(self, key: asyncssh.SSHKey) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        line = (
            f"{_known_hosts_pattern(self.host, self.port)} "
            f"{key.export_public_key('openssh').decode().split()[0]} "
            f"{key.export_public_key('openssh').decode().split()[1]} "
            f"conduit-device={self.name}\n"
        )
        fd = os.open(self.tofu_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        log.warning(
            "device %s: host key %s trusted on first use and pinned in %s",
            self.name,
            key.get_fingerprint(),
            self.tofu_file,
        )

    # -- connection ----------------------------------------------------------

    async def _open(self) -> asyncssh.SSHClientConnection:
        device = self.device
        trusted = self._trusted_keys()
        first_use = not trusted
        if first_use and not device.trust_on_first_use:
            raise DeviceFailure(
                "host_key_unknown",
                "no host key pinned for this device",
                f"device {self.name}: set host_key, known_hosts or trust_on_first_use",
            )
        password = read_secret(device)
        if device.identity is not None and not device.identity.is_file():
            raise key_missing(self.name, "is missing")
        client_keys = [str(device.identity)] if device.identity is not None else None
        client = _Client(first_use)
        algs = effective(device.crypto)
        try:
            async with asyncio.timeout(device.connect_timeout):
                conn, _ = await asyncssh.create_connection(
                    lambda: client,
                    self.host,
                    self.port,
                    username=device.user,
                    known_hosts=(trusted, [], []),
                    client_keys=client_keys,
                    password=password,
                    agent_path=None,
                    config=None,
                    kbdint_auth=False,
                    gss_auth=False,
                    host_based_auth=False,
                    kex_algs=list(algs.kex),
                    encryption_algs=list(algs.ciphers),
                    mac_algs=list(algs.macs),
                    server_host_key_algs=list(algs.host_keys),
                    compression_algs=["none"],
                    connect_timeout=device.connect_timeout,
                    login_timeout=device.connect_timeout,
                    keepalive_interval=KEEPALIVE_INTERVAL,
                    keepalive_count_max=KEEPALIVE_COUNT_MAX,
                )
        except (OSError, ValueError, asyncssh.Error, TimeoutError) as exc:
            seen = client.server_key.get_fingerprint() if client.server_key else None
            raise connect_failure(self.name, exc, seen) from None
        if first_use and client.server_key is not None:
            self._store_first_key(client.server_key)
        self.connects += 1
        self.algorithms = negotiated(conn)
        log.info(
            "device %s: connected to %s:%d (%s)",
            self.name,
            self.host,
            self.port,
            ", ".join(f"{k} {v}" for k, v in self.algorithms.items()),
        )
        if self.on_connect is not None:
            self.on_connect(self)
        return conn

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The live connection, opened or reopened as needed."""
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._sftp = None
                try:
                    self._conn = await self._open()
                except DeviceFailure as failure:
                    if self.report is not None:
                        try:
                            await self.report(self.name, failure)
                        except Exception as exc:  # the client still gets its answer
                            log.error("device %s: could not report: %s", self.name, exc)
                    raise
            return self._conn

    async def sftp(self) -> asyncssh.SFTPClient:
        """The connection's SFTP session (one, shared by every transfer)."""
        conn = await self.connection()
        async with self._lock:
            if self._sftp is None:
                try:
                    async with asyncio.timeout(self.device.connect_timeout):
                        self._sftp = await conn.start_sftp_client()
                except (OSError, asyncssh.Error, TimeoutError) as exc:
                    if isinstance(exc, asyncssh.ChannelOpenError | asyncssh.SFTPError):
                        raise StorageError(
                            Fault.UNSUPPORTED,
                            "device has no SFTP service",
                            f"device {self.name}: SFTP subsystem refused",
                        ) from None
                    raise device_error(self.name, exc, "start sftp") from None
            return self._sftp

    def broken(self) -> None:
        """Forget the connection after a failure so the next use reconnects."""
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()

    async def acquire_slot(self) -> None:
        """Take one of the device's ``max_concurrency`` slots (bounded wait)."""
        try:
            async with asyncio.timeout(self.slot_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise StorageError(
                Fault.UNAVAILABLE,
                "device busy",
                f"device {self.name}: no free slot after {self.slot_timeout:g}s",
            ) from None

    def release_slot(self) -> None:
        self._slots.release()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of a block."""
        await self.acquire_slot()
        try:
            yield
        finally:
            self.release_slot()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await conn.wait_closed()


_LinkKey = tuple[str, str, str, int]
_LINKS: dict[_LinkKey, tuple[DeviceLink, int]] = {}


def acquire_link(name: str, device: DeviceConfig, state_dir: Path) -> DeviceLink:
    """The process-wide link for this device (same config, same event loop)."""
    loop_id = id(asyncio.get_running_loop())
    key = (name, device.model_dump_json(), str(state_dir), loop_id)
    link, refs = _LINKS.get(key, (None, 0))
    if link is None:
        link = DeviceLink(name, device, state_dir)
    _LINKS[key] = (link, refs + 1)
    return link


async def release_link(link: DeviceLink) -> None:
    """Drop one user of ``link``; the last one closes the connection."""
    for key, (candidate, refs) in list(_LINKS.items()):
        if candidate is link:
            if refs > 1:
                _LINKS[key] = (link, refs - 1)
                return
            del _LINKS[key]
            break
    await link.close()


class DeviceOps:
    """What a device handle shares: its link, and errors mapped (a broken
    connection marks the link broken)."""

    def __init__(self, link: DeviceLink) -> None:
        self.link = link

    def fail(self, exc: BaseException, action: str) -> StorageError:
        error = device_error(self.link.name, exc, action)
        if error.fault is Fault.UNAVAILABLE:
            self.link.broken()
        return error
