"""``Client``: copy files to and from one SSH server, typed and awaitable.

::

    async with Client("rtu-01", user="ops", identity=Path("keys/fleet")) as client:
        [sent] = await client.put(Path("fw.bin"), "/firmware/fw.bin", verify=True)
        print(sent.sha256, sent.verified)

The connection opens at ``__aenter__`` (or :meth:`open`): SFTP first; with
``protocol="auto"`` a server that refuses the SFTP subsystem is used over
legacy SCP instead (``protocol="scp"`` forces it). Every failure is raised as
a :class:`~conduit.client.errors.ClientError` whose message is one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import asyncssh

from conduit.client import scpcopy, sftpcopy
from conduit.client.common import FarHash, LocalFault, Progress, Throttle, Transfer, hash_file
from conduit.client.endpoint import DEFAULT_CONNECT_TIMEOUT, Endpoint, open_connection
from conduit.client.errors import FINAL, ClientError, describe
from conduit.names import name_problem

Protocol = Literal["auto", "sftp", "scp"]
RemoteHash = Literal["readback", "sha256sum"]
"""How ``verify`` learns the far file's SHA-256: read it back, or ask the device."""
_FAULTS = (asyncssh.Error, OSError, TimeoutError)
CLOSE_TIMEOUT = 5.0


def check_rename(template: str | None) -> str | None:
    """A rename command template must name both paths, and nothing else in braces."""
    if template is None:
        return None
    rest = template.replace("{old}", "").replace("{new}", "")
    if "{old}" not in template or "{new}" not in template or "{" in rest or "}" in rest:
        raise ClientError(f"scp_rename {template!r}: use {{old}} and {{new}}, each once or more")
    return template


class Client:
    """One SSH server; ``put`` and ``get`` return one :class:`Transfer` per file."""

    def __init__(
        self,
        host: str | Endpoint,
        *,
        port: int | None = None,
        user: str | None = None,
        identity: Path | None = None,
        jump: str | None = None,
        host_key: str | None = None,
        known_hosts: Path | None = None,
        ssh_config: tuple[Path, ...] | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        protocol: Protocol = "auto",
        limit_kbit: float | None = None,
        remote_hash: RemoteHash = "readback",
        scp_rename: str | None = None,
        **options: Any,
    ) -> None:
        if isinstance(host, Endpoint):
            self.endpoint = host
        else:
            self.endpoint = Endpoint(
                host,
                port,
                user,
                identity,
                jump,
                host_key,
                known_hosts,
                ssh_config,
                connect_timeout,
                options=options,
            )
        self.requested: Protocol = protocol
        self.limit_kbit = limit_kbit
        self.remote_hash: RemoteHash = remote_hash
        self.scp_rename = check_rename(scp_rename)
        """Legacy SCP: the device's rename command, for temp-name uploads (see scpcopy)."""
        self.conn: asyncssh.SSHClientConnection | None = None
        self.sftp: asyncssh.SFTPClient | None = None
        self.jumps: list[asyncssh.SSHClientConnection] = []
        self.gateway = False
        """The server is a Conduit gateway: it makes uploads atomic itself."""

    @property
    def protocol(self) -> Literal["sftp", "scp"]:
        """The protocol in use (known once open)."""
        return "sftp" if self.sftp is not None else "scp"

    async def open(self) -> Client:
        where = self.endpoint.label()
        try:
            self.conn, self.jumps = await open_connection(self.endpoint)
        except _FAULTS as exc:
            final = isinstance(exc, FINAL)
            raise ClientError(describe(exc, where), retryable=not final) from exc
        version = str(self.conn.get_extra_info("server_version") or "")
        self.gateway = version.startswith("SSH-2.0-Conduit")
        if self.requested == "scp":
            return self
        try:
            self.sftp = await self.conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            if self.requested == "sftp":
                await self.close()
                raise ClientError(f"{where}: no SFTP server ({describe(exc, where)})") from exc
        return self

    async def close(self) -> None:
        if self.sftp is not None:
            self.sftp.exit()
        if self.conn is not None:
            self.conn.close()
            with contextlib.suppress(Exception):
                # A device that hangs must not hang the close too.
                await asyncio.wait_for(self.conn.wait_closed(), CLOSE_TIMEOUT)
        for jump in self.jumps:
            jump.close()
        self.conn, self.sftp, self.jumps = None, None, []

    async def __aenter__(self) -> Client:
        return await self.open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _where(self, path: str) -> str:
        return f"{self.endpoint.host}:{path}"

    def _connection(self) -> asyncssh.SSHClientConnection:
        if self.conn is None:
            raise ClientError(f"{self.endpoint.label()}: not connected (use `async with`)")
        return self.conn

    # -- upload -------------------------------------------------------------

    async def put(
        self,
        local: Path,
        remote: str,
        *,
        recursive: bool = False,
        preserve: bool = False,
        verify: bool = False,
        atomic: bool = True,
        progress: Progress | None = None,
    ) -> list[Transfer]:
        """Copy ``local`` to ``remote`` (into it, if it is a folder), as ``scp`` does.

        ``atomic``: upload under a temp name and rename. Not done through a
        Conduit gateway, which does exactly that itself, and whose write-only
        drop folders would refuse the client's rename (and the temp's removal).
        """
        conn = self._connection()
        atomic = atomic and not self.gateway
        if not local.exists():
            raise ClientError(f"{local}: no such file or folder")
        if local.is_dir() and not recursive:
            raise ClientError(f"{local}: is a folder (use -r)")
        try:
            if await self._is_remote_dir(remote):
                remote = posixpath.join(remote, local.name)
            if self.sftp is None:
                return await self._put_scp(
                    conn, local, remote, recursive, preserve, verify, progress
                )
            throttle = Throttle(self.limit_kbit)
            if local.is_dir():
                return await self._put_tree(local, remote, preserve, verify, atomic, progress)
            sent = await sftpcopy.upload(
                self.sftp,
                local,
                remote,
                preserve=preserve,
                verify=verify,
                atomic=atomic,
                progress=progress,
                throttle=throttle,
                far_hash=self._far_hash(),
            )
            return [sent]
        except _FAULTS as exc:
            place = str(local) if isinstance(exc, LocalFault) else self._where(remote)
            raise ClientError(describe(exc, place)) from exc

    async def _put_tree(
        self,
        local: Path,
        remote: str,
        preserve: bool,
        verify: bool,
        atomic: bool,
        progress: Progress | None,
    ) -> list[Transfer]:
        assert self.sftp is not None
        throttle = Throttle(self.limit_kbit)
        results = []
        for folder, dirs, files in os.walk(local):
            dirs.sort()
            relative = Path(folder).relative_to(local)
            far = posixpath.join(remote, *relative.parts)
            if not await self.sftp.isdir(far):
                await self.sftp.mkdir(far)
            for name in sorted(files):
                results.append(
                    await sftpcopy.upload(
                        self.sftp,
                        Path(folder) / name,
                        posixpath.join(far, name),
                        preserve=preserve,
                        verify=verify,
                        atomic=atomic,
                        progress=progress,
                        throttle=throttle,
                        far_hash=self._far_hash(),
                    )
                )
        return results

    async def _put_scp(
        self,
        conn: asyncssh.SSHClientConnection,
        local: Path,
        remote: str,
        recursive: bool,
        preserve: bool,
        verify: bool,
        progress: Progress | None,
    ) -> list[Transfer]:
        if self.limit_kbit:
            raise ClientError(
                f"{self._where(remote)}: a bandwidth limit needs SFTP (not legacy SCP)"
            )
        if not local.is_dir():
            return [
                await scpcopy.upload(
                    conn,
                    local,
                    remote,
                    preserve=preserve,
                    verify=verify,
                    progress=progress,
                    far_hash=self._far_hash(),
                    rename=self.scp_rename,
                )
            ]
        began = time.monotonic()
        await asyncssh.scp(
            str(local),
            (conn, remote),
            preserve=preserve,
            recurse=True,
            progress_handler=scpcopy.handler(progress),
        )
        results = []
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            digest, count = hash_file(path)
            far = posixpath.join(remote, *path.relative_to(local).parts)
            results.append(
                Transfer(str(path), far, count, digest.hexdigest(), time.monotonic() - began, "scp")
            )
        return results

    # -- download -----------------------------------------------------------

    async def get(
        self,
        remote: str,
        local: Path,
        *,
        recursive: bool = False,
        preserve: bool = False,
        verify: bool = False,
        resume: bool = False,
        progress: Progress | None = None,
    ) -> list[Transfer]:
        """Copy ``remote`` to ``local`` (into it, if it is a folder), as ``scp`` does."""
        conn = self._connection()
        try:
            if local.is_dir():
                name = posixpath.basename(remote.rstrip("/"))
                if name in ("", ".", ".."):
                    raise ClientError(f"{self._where(remote)}: name a file or folder to copy")
                local = local / name
            if not local.parent.is_dir():
                raise ClientError(f"{local.parent}: no such local folder")
            if self.sftp is None:
                if self.limit_kbit:
                    raise ClientError(
                        f"{self._where(remote)}: a bandwidth limit needs SFTP (not legacy SCP)"
                    )
                if recursive:
                    return await scpcopy.download_tree(
                        conn, remote, local, preserve=preserve, progress=progress
                    )
                return [
                    await scpcopy.download(
                        conn,
                        remote,
                        local,
                        preserve=preserve,
                        verify=verify,
                        progress=progress,
                        far_hash=self._far_hash(),
                    )
                ]
            if await self.sftp.isdir(remote):
                if not recursive:
                    raise ClientError(f"{self._where(remote)}: is a folder (use -r)")
                return await self._get_tree(remote, local, preserve, verify, progress)
            got = await sftpcopy.download(
                self.sftp,
                remote,
                local,
                conn=conn,
                preserve=preserve,
                verify=verify,
                resume=resume,
                progress=progress,
                throttle=Throttle(self.limit_kbit),
                far_hash=self._far_hash(),
            )
            return [got]
        except _FAULTS as exc:
            place = str(local) if isinstance(exc, LocalFault) else self._where(remote)
            raise ClientError(describe(exc, place)) from exc

    async def _get_tree(
        self, remote: str, local: Path, preserve: bool, verify: bool, progress: Progress | None
    ) -> list[Transfer]:
        assert self.sftp is not None
        throttle = Throttle(self.limit_kbit)
        local.mkdir(exist_ok=True)
        results = []
        for entry in sorted(await self.sftp.readdir(remote), key=lambda e: str(e.filename)):
            name = str(entry.filename)
            if name in (".", ".."):
                continue
            problem = name_problem(name)
            if problem:
                # A far name becomes a local one: "../x" or an escape sequence must not.
                raise ClientError(
                    f"{self._where(remote)}: refusing the far name {name!r}: {problem}"
                )
            far = posixpath.join(remote, name)
            kind = entry.attrs.type
            if kind == asyncssh.FILEXFER_TYPE_SYMLINK:  # followed, as scp -r does
                kind = (await self.sftp.stat(far)).type
            if kind == asyncssh.FILEXFER_TYPE_DIRECTORY:
                results += await self._get_tree(far, local / name, preserve, verify, progress)
            elif kind == asyncssh.FILEXFER_TYPE_REGULAR:
                results.append(
                    await sftpcopy.download(
                        self.sftp,
                        far,
                        local / name,
                        preserve=preserve,
                        verify=verify,
                        progress=progress,
                        throttle=throttle,
                        far_hash=self._far_hash(),
                    )
                )
        return results

    # -- asking -------------------------------------------------------------

    async def _is_remote_dir(self, remote: str) -> bool:
        if self.sftp is not None:
            return bool(await self.sftp.isdir(remote))
        return remote.endswith("/")

    def _far_hash(self) -> FarHash | None:
        conn = self.conn
        if self.remote_hash != "sha256sum" or conn is None:
            return None

        async def digest(path: str) -> str:
            return await sftpcopy.sha256sum(conn, path)

        return digest

    async def sha256(self, remote: str) -> str:
        """The far file's SHA-256: the device's ``sha256sum`` (``remote_hash="sha256sum"``),
        else read back (SFTP only)."""
        far_hash = self._far_hash()
        if far_hash is not None:
            try:
                return await far_hash(remote)
            except _FAULTS as exc:
                raise ClientError(describe(exc, self._where(remote))) from exc
        if self.sftp is None:
            raise ClientError(f"{self._where(remote)}: hashing a far file needs SFTP")
        try:
            return await sftpcopy.remote_sha256(self.sftp, remote, Throttle(self.limit_kbit))
        except _FAULTS as exc:
            raise ClientError(describe(exc, self._where(remote))) from exc

    async def run(self, command: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run ``command`` on the device as given (a fleet's pre/post check); return its
        exit status and the first line of what it printed (stderr first)."""
        conn = self._connection()
        try:
            result = await conn.run(command, check=False, timeout=timeout)
        except _FAULTS as exc:
            raise ClientError(describe(exc, f"{self.endpoint.host}: {command!r}")) from exc
        printed = [str(text or "").strip() for text in (result.stderr, result.stdout) if text]
        first = next((t.splitlines()[0] for t in printed if t), "")
        return (result.exit_status if result.exit_status is not None else -1), first[:500]

    async def is_dir(self, remote: str) -> bool:
        """Whether ``remote`` is a folder (legacy SCP cannot ask: a trailing ``/`` says so)."""
        try:
            return await self._is_remote_dir(remote)
        except _FAULTS as exc:
            raise ClientError(describe(exc, self._where(remote))) from exc
