"""Run a verification tool (``ssh-keygen``, ``gpg``) without blocking the loop.

A tool that hangs is killed at the timeout; a tool that is missing or killed
is an error the caller turns into a failed check (fail closed). Output is
bounded: the tools' answers are short.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_OUTPUT = 256 * 1024


class ToolFailed(Exception):
    """The tool could not give an answer (missing, timed out, killed)."""


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: Path | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``argv`` with ``stdin`` (a file) or nothing as input; C locale."""
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", **(env or {})}
    source = stdin.open("rb") if stdin is not None else None
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=source if source is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment,
            )
        except OSError as exc:
            raise ToolFailed(f"{argv[0]}: cannot run ({exc.strerror or exc})") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise ToolFailed(f"{argv[0]}: no answer within {timeout:g} s") from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
    finally:
        if source is not None:
            source.close()
    if process.returncode is not None and process.returncode < 0:
        raise ToolFailed(f"{argv[0]}: killed by signal {-process.returncode}")
    return Result(
        process.returncode or 0,
        out[:MAX_OUTPUT].decode("utf-8", "replace"),
        err[:MAX_OUTPUT].decode("utf-8", "replace"),
    )
