"""Fixed device command templates, filled only with shell-quoted paths.

A device's ``commands`` table (``rename = "mv -- {old} {new}"``,
``delete = "rm -- {path}"``, ``sha256 = "sha256sum -- {path}"``, ...) is
written by the security admin in the policy file. At run time the only thing
substituted is a device path the relay built itself, always passed through
:func:`shlex.quote`, so nothing a user typed reaches the device's shell
unquoted (the CVE-2020-15778 class of bug). Templates may only use the
placeholders their operation defines, with no format specs or attribute
access.
"""

from __future__ import annotations

import asyncio
import shlex
import string

import asyncssh

from conduit.errors import Fault, StorageError
from conduit.storage.relay.connection import DeviceLink, device_error

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "rename": frozenset({"old", "new"}),
    "delete": frozenset({"path"}),
    "mkdir": frozenset({"path"}),
    "rmdir": frozenset({"path"}),
    "list": frozenset({"path"}),
    "sha256": frozenset({"path"}),
}
"""Operations a template may be given for, and the placeholders each may use."""

COMMAND_TIMEOUT = 600.0
"""Upper bound for one device command (hashing a large file takes a while)."""

_STDERR_FAULTS = (
    ("no such file", Fault.NOT_FOUND),
    ("permission denied", Fault.FORBIDDEN),
    ("file exists", Fault.EXISTS),
    ("not empty", Fault.NOT_EMPTY),
    ("not a directory", Fault.NOT_A_DIRECTORY),
    ("is a directory", Fault.IS_A_DIRECTORY),
    ("no space", Fault.NO_SPACE),
)


def check_template(operation: str, template: str) -> None:
    """Raise ValueError unless ``template`` is a valid template for ``operation``."""
    allowed = PLACEHOLDERS.get(operation)
    if allowed is None:
        raise ValueError(f"unknown device command {operation!r}")
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in allowed or spec or conversion:
            raise ValueError(
                f"command {operation!r} may only use {{{'}, {'.join(sorted(allowed))}}}"
            )


def render(operation: str, template: str, **paths: str) -> str:
    """Fill ``template`` with the shell-quoted ``paths``."""
    check_template(operation, template)
    return template.format_map({key: shlex.quote(value) for key, value in paths.items()})


def fault_from_stderr(stderr: str) -> Fault:
    lowered = stderr.lower()
    for needle, fault in _STDERR_FAULTS:
        if needle in lowered:
            return fault
    return Fault.FAILURE


async def run(link: DeviceLink, operation: str, **paths: str) -> bytes:
    """Run the device's configured command for ``operation``; return stdout.

    Raises UNSUPPORTED if the device has no template for it and a
    StorageError naming the operation if the command fails.
    """
    template = link.device.commands.get(operation)
    if template is None:
        raise StorageError(Fault.UNSUPPORTED, "not supported by this device")
    command = render(operation, template, **paths)
    conn = await link.connection()
    try:
        async with link.slot():
            async with asyncio.timeout(COMMAND_TIMEOUT):
                result = await conn.run(command, check=False, encoding=None)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        link.broken()
        raise device_error(link.name, exc, f"command {operation}") from None
    stdout = result.stdout if isinstance(result.stdout, bytes) else b""
    if result.exit_status != 0:
        stderr = result.stderr if isinstance(result.stderr, bytes) else b""
        text = stderr.decode("utf-8", "replace")
        fault = fault_from_stderr(text)
        raise StorageError(
            fault,
            fault.value if fault is not Fault.FAILURE else f"device command {operation} failed",
            f"device {link.name}: command {operation} exited {result.exit_status}",
        )
    return stdout
