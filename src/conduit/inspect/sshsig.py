"""OpenSSH signatures (``ssh-keygen -Y sign``), verified by ``ssh-keygen -Y verify``.

The cryptography is left to OpenSSH; this module reads the signature's
envelope first (the ``SSHSIG`` blob: signer key and namespace) so that the
common mistakes get their own reason instead of OpenSSH's one "Could not
verify signature": armour that is not an SSH signature, a signature made for
another namespace (``-n``), a key the trust set does not list, a key whose
``valid-before`` has passed. Then ``ssh-keygen -Y find-principals`` names
the signer in the allowed-signers file and ``ssh-keygen -Y verify`` checks
the file against the signature for that principal and namespace.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from conduit.inspect._proc import ToolFailed, run
from conduit.inspect.outcome import (
    EXPIRED,
    GOOD,
    MALFORMED,
    MISMATCH,
    UNAVAILABLE,
    UNTRUSTED,
    WRONG_NAMESPACE,
    Outcome,
    bad,
)

BEGIN = b"-----BEGIN SSH SIGNATURE-----"
END = b"-----END SSH SIGNATURE-----"
MAX_PRINCIPALS = 8


class MalformedSignature(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Envelope:
    """What an SSH signature says about itself (not yet verified)."""

    key_type: str
    key: bytes  # the public key blob
    namespace: str


def is_ssh_signature(data: bytes) -> bool:
    return data.lstrip().startswith(BEGIN)


def _string(blob: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(blob):
        raise MalformedSignature("truncated")
    (length,) = struct.unpack(">I", blob[at : at + 4])
    end = at + 4 + length
    if end > len(blob):
        raise MalformedSignature("truncated")
    return blob[at + 4 : end], end


def parse(data: bytes) -> Envelope:
    """The envelope of an armoured SSH signature; MalformedSignature if it is none."""
    text = data.strip()
    if not text.startswith(BEGIN) or not text.endswith(END):
        raise MalformedSignature("not an SSH signature (no BEGIN/END SSH SIGNATURE lines)")
    body = text[len(BEGIN) : -len(END)]
    try:
        blob = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedSignature("the armour is not base64") from None
    if not blob.startswith(b"SSHSIG"):
        raise MalformedSignature("no SSHSIG header")
    at = 6
    if len(blob) < at + 4 or struct.unpack(">I", blob[at : at + 4])[0] != 1:
        raise MalformedSignature("unknown SSHSIG version")
    key, at = _string(blob, at + 4)
    namespace, at = _string(blob, at)
    _, at = _string(blob, at)  # reserved
    _, at = _string(blob, at)  # hash algorithm
    _, at = _string(blob, at)  # signature
    if at != len(blob):
        raise MalformedSignature("trailing bytes after the signature")
    key_type, _ = _string(key, 0)
    try:
        return Envelope(key_type.decode("ascii"), key, namespace.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedSignature("key type or namespace is not text") from None


_VALID_BEFORE = re.compile(r'valid-before="?(\d{8}(?:\d{4}(?:\d{2})?)?)Z?"?', re.IGNORECASE)


def _listed_line(allowed: Path, key: bytes) -> str | None:
    """The allowed-signers line carrying ``key``, if any."""
    wanted = base64.b64encode(key).decode("ascii")
    try:
        lines = allowed.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line for line in lines if wanted in line.split()), None)


def _expired(line: str | None, now: datetime) -> bool:
    match = _VALID_BEFORE.search(line or "")
    if match is None:
        return False
    digits = match[1].ljust(14, "0")
    until = datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return until <= now


async def verify(
    file: Path,
    signature: Path,
    data: bytes,
    *,
    allowed_signers: Path | None,
    namespace: str,
    timeout: float,
    trust: str = "",
) -> Outcome:
    """Does the SSH signature ``signature`` (its bytes: ``data``) vouch for ``file``?"""
    try:
        envelope = parse(data)
    except MalformedSignature as exc:
        return bad(MALFORMED, f"{signature.name}: {exc}")
    if envelope.namespace != namespace:
        return bad(
            WRONG_NAMESPACE,
            f"{signature.name}: signed for namespace {envelope.namespace!r},"
            f" trust {trust!r} expects {namespace!r}",
        )
    if allowed_signers is None:
        return bad(UNTRUSTED, f"trust {trust!r} lists no ssh_allowed_signers")
    line = _listed_line(allowed_signers, envelope.key)
    try:
        found = await run(
            [
                "ssh-keygen",
                "-Y",
                "find-principals",
                "-s",
                str(signature),
                "-f",
                str(allowed_signers),
            ],
            timeout=timeout,
        )
        principals = (
            [p for row in found.stdout.splitlines() for p in row.strip().split(",") if p]
            if found.returncode == 0
            else []
        )
        if not principals:
            if line is not None and _expired(line, datetime.now(UTC)):
                return bad(
                    EXPIRED, f"{envelope.key_type} key of trust {trust!r}: valid-before passed"
                )
            return bad(UNTRUSTED, f"{envelope.key_type} key is not in trust {trust!r}")
        for principal in principals[:MAX_PRINCIPALS]:
            checked = await run(
                [
                    "ssh-keygen",
                    "-Y",
                    "verify",
                    "-f",
                    str(allowed_signers),
                    "-I",
                    principal,
                    "-n",
                    namespace,
                    "-s",
                    str(signature),
                ],
                timeout=timeout,
                stdin=file,
            )
            if checked.returncode == 0:
                return Outcome(
                    True, GOOD, f"ssh signature by {principal!r} (trust {trust!r})", principal
                )
    except ToolFailed as exc:
        return bad(UNAVAILABLE, str(exc))
    if _expired(line, datetime.now(UTC)):
        return bad(EXPIRED, f"{envelope.key_type} key of trust {trust!r}: valid-before passed")
    why = checked.stderr.strip().splitlines()
    return bad(MISMATCH, f"ssh-keygen: {why[0] if why else 'could not verify'} (trust {trust!r})")


_TOKEN = re.compile(r'(?:[^\s"]|"[^"]*")+')


def allowed_signers_problems(path: Path) -> list[str]:
    """Lines of an allowed-signers file that ``ssh-keygen`` would not use."""
    import asyncssh

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"{path}: no such file"]
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot read ({exc.__class__.__name__})"]
    problems: list[str] = []
    keys = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens = _TOKEN.findall(line)
        # PRINCIPALS [OPTIONS] KEYTYPE BASE64 [COMMENT]: the options are optional
        for at in (1, 2):
            if len(tokens) > at + 1:
                try:
                    asyncssh.import_public_key(f"{tokens[at]} {tokens[at + 1]}")
                except (asyncssh.KeyImportError, ValueError):
                    continue
                keys += 1
                break
        else:
            problems.append(f"{path} line {number}: not PRINCIPALS [OPTIONS] KEYTYPE KEY")
    if not problems and not keys:
        problems.append(f"{path}: lists no key")
    return problems
