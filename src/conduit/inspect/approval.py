"""Four-eyes decisions as OpenSSH signatures anyone with the policy can check.

A decision is a short text naming the item, the file's SHA-256 and the
verdict, signed with ``ssh-keygen -Y sign -n conduit-approval`` by the
approver's own key (the key the policy lists for that user). It is kept with
the item and journalled; ``ssh-keygen -Y verify`` with allowed-signers built
from the policy's keys proves later who decided what, about which bytes. The
gateway verifies it again before acting: a row in the state file alone,
which anyone able to write that file could forge, releases nothing.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

NAMESPACE = "conduit-approval"
VERDICTS = ("approve", "reject")
TIMEOUT = 30.0


class ApprovalError(Exception):
    """A decision that cannot be made or does not verify (one line, for the CLI)."""


def message(item_id: str, sha256: str, verdict: str) -> str:
    """The exact text an approver signs (and a verifier checks)."""
    if verdict not in VERDICTS:
        raise ApprovalError(f"unknown verdict {verdict!r}")
    return f"conduit-approval v1\nitem {item_id}\nsha256 {sha256}\nverdict {verdict}\n"


def key_line(blob: bytes) -> str:
    """``TYPE BASE64`` for a public key blob (its type is the blob's first string)."""
    (length,) = struct.unpack(">I", blob[:4])
    kind = blob[4 : 4 + length].decode("ascii")
    return f"{kind} {base64.b64encode(blob).decode('ascii')}"


def fingerprint(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def allowed_signers(keys: Mapping[str, Iterable[bytes]]) -> str:
    """An allowed-signers file: each policy user's keys, for this namespace only."""
    lines = []
    for user in sorted(keys):
        for blob in sorted(keys[user]):
            lines.append(f'{user} namespaces="{NAMESPACE}" {key_line(blob)}')
    return "\n".join(lines) + "\n"


def _run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApprovalError(f"ssh-keygen failed: {exc}") from None


def public_blob(private_key: Path) -> bytes:
    """The public key blob of ``private_key`` (``ssh-keygen -y``)."""
    done = _run(["ssh-keygen", "-y", "-f", str(private_key)])
    if done.returncode != 0:
        text = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ApprovalError(f"{private_key}: cannot read the key ({text[-1] if text else 'error'})")
    parts = done.stdout.split()
    try:
        return base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        raise ApprovalError(f"{private_key}: not an OpenSSH key") from None


def owner(blob: bytes, keys: Mapping[str, Iterable[bytes]]) -> str:
    """The one policy user whose keys include ``blob``."""
    users = sorted(user for user, blobs in keys.items() if blob in set(blobs))
    if not users:
        raise ApprovalError(f"no user of the policy has the key {fingerprint(blob)}")
    if len(users) > 1:
        raise ApprovalError(f"key {fingerprint(blob)} belongs to several users: {', '.join(users)}")
    return users[0]


def sign(private_key: Path, text: str) -> str:
    """An armoured OpenSSH signature of ``text`` in the approval namespace."""
    with tempfile.TemporaryDirectory(prefix="conduit-approve-") as tmp:
        target = Path(tmp) / "decision"
        target.write_text(text, encoding="ascii")
        done = _run(["ssh-keygen", "-q", "-Y", "sign", "-n", NAMESPACE, "-f", str(private_key),
                     str(target)])  # fmt: skip
        signature = target.with_name("decision.sig")
        if done.returncode != 0 or not signature.exists():
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else "error"
            raise ApprovalError(f"cannot sign with {private_key}: {why}")
        return signature.read_text(encoding="ascii")


def verify(signature: str, text: str, user: str, keys: Mapping[str, Iterable[bytes]]) -> None:
    """Raise :class:`ApprovalError` unless ``signature`` is ``user``'s over ``text``."""
    if user not in keys:
        raise ApprovalError(f"{user!r} is not a user of the policy")
    with tempfile.TemporaryDirectory(prefix="conduit-verify-") as tmp:
        signers = Path(tmp) / "allowed_signers"
        signers.write_text(allowed_signers({user: keys[user]}), encoding="ascii")
        sig = Path(tmp) / "decision.sig"
        sig.write_text(signature, encoding="ascii")
        done = _run(
            ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", user, "-n", NAMESPACE,
             "-s", str(sig)],
            text.encode("ascii"),
        )  # fmt: skip
    if done.returncode != 0:
        raise ApprovalError(f"the decision's signature does not verify as {user}'s")
