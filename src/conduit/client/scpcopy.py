"""One file or folder over legacy SCP (``scp -t`` / ``scp -f``), with asyncssh's SCP client.

For devices with no SFTP server. The protocol has no rename, so an upload
lands under its final name as it arrives (a cut link can leave a partial file
on the device: ``Transfer`` results say ``protocol="scp"`` and the docs warn
of it). Locally nothing changes: a download goes to the hidden partial name
and is renamed once complete; a folder goes to a hidden temp folder first.
The SHA-256 is the local file's, read once more from the local disk (asyncssh's
SCP client streams between the channel and the file itself); ``verify``
copies the far file back and compares. There is no bandwidth cap (the copy
loop is asyncssh's).
"""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh

from conduit.client.common import (
    PART_SUFFIX,
    FarHash,
    Progress,
    Transfer,
    fsync_replace,
    hash_file,
    temp_name,
)
from conduit.client.common import partial_path as _partial
from conduit.client.errors import ClientError, RemoteMismatch


def handler(progress: Progress | None) -> Callable[[bytes, bytes, int, int], None] | None:
    """asyncssh's SCP progress callback, reporting to ``progress``."""
    if progress is None:
        return None

    def report(source: bytes, _dest: bytes, done: int, total: int) -> None:
        progress(os.path.basename(os.fsdecode(source)), done, total)

    return report


async def _read_back(conn: asyncssh.SSHClientConnection, remote: str, scratch: Path) -> str:
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".conduit-verify-") as folder:
        copy = Path(folder) / "copy"
        await asyncssh.scp((conn, remote), str(copy))
        return hash_file(copy)[0].hexdigest()


def rename_command(template: str, old: str, new: str) -> str:
    """The device's rename command: ``{old}`` and ``{new}`` replaced, each shell-quoted."""
    return template.replace("{old}", shlex.quote(old)).replace("{new}", shlex.quote(new))


async def upload(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    *,
    preserve: bool = False,
    verify: bool = False,
    progress: Progress | None = None,
    far_hash: FarHash | None = None,
    rename: str | None = None,
) -> Transfer:
    """``rename``: the device's rename command template (``mv -f -T -- {old} {new}``):
    the file then goes to a hidden temp name first and is renamed when complete and
    verified. Without one it is written under its final name as it arrives."""
    began = time.monotonic()
    digest, count = hash_file(local)
    target = temp_name(remote) if rename else remote
    await asyncssh.scp(
        str(local), (conn, target), preserve=preserve, progress_handler=handler(progress)
    )
    sha256 = digest.hexdigest()
    if verify:
        if far_hash is not None:
            far = await far_hash(target)
        else:
            far = await _read_back(conn, target, Path(tempfile.gettempdir()))
        if far != sha256:
            raise RemoteMismatch(
                f"{remote}: the far copy hashes to {far[:16]}..., sent {sha256[:16]}..."
            )
    if rename:
        result = await conn.run(rename_command(rename, target, remote), check=False, timeout=60)
        if result.exit_status != 0:
            error = str(result.stderr or "").strip().splitlines() or ["no message"]
            raise ClientError(
                f"{remote}: the device's rename failed (exit {result.exit_status}): {error[0]}; "
                f"the upload stays under {posixpath.basename(target)}"
            )
    return Transfer(
        str(local), remote, count, sha256, time.monotonic() - began, "scp", verified=verify
    )


async def download(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local: Path,
    *,
    preserve: bool = False,
    verify: bool = False,
    progress: Progress | None = None,
    far_hash: FarHash | None = None,
) -> Transfer:
    began = time.monotonic()
    partial = _partial(local)
    try:
        await asyncssh.scp(
            (conn, remote), str(partial), preserve=preserve, progress_handler=handler(progress)
        )
        digest, count = hash_file(partial)
        sha256 = digest.hexdigest()
        if verify:
            if far_hash is not None:
                far = await far_hash(remote)
            else:
                far = await _read_back(conn, remote, local.parent)
            if far != sha256:
                raise RemoteMismatch(f"{remote}: the far file hashes differently: not kept")
        fsync_replace(partial, local)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Transfer(
        remote, str(local), count, sha256, time.monotonic() - began, "scp", verified=verify
    )


async def download_tree(
    conn: asyncssh.SSHClientConnection,
    remote: str,
    local: Path,
    *,
    preserve: bool = False,
    progress: Progress | None = None,
) -> list[Transfer]:
    """``scp -r``: the folder arrives in a hidden temp folder, then moves into place."""
    began = time.monotonic()
    local.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=local.parent, prefix=f".{local.name}{PART_SUFFIX}-"))
    try:
        landing = scratch / "tree"
        await asyncssh.scp(
            (conn, remote),
            str(landing),
            preserve=preserve,
            recurse=True,
            progress_handler=handler(progress),
        )
        results = []
        for folder, _dirs, files in os.walk(landing):
            relative = Path(folder).relative_to(landing)
            (local / relative).mkdir(parents=True, exist_ok=True)
            for name in sorted(files):
                path = Path(folder) / name
                digest, count = hash_file(path)
                fsync_replace(path, local / relative / name)
                results.append(
                    Transfer(
                        posixpath.join(remote, *relative.parts, name),
                        str(local / relative / name),
                        count,
                        digest.hexdigest(),
                        time.monotonic() - began,
                        "scp",
                    )
                )
        return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
