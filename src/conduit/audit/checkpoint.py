"""Signed checkpoints: the gateway's Ed25519 key seals (record count, head hash).

Anyone can recompute a hash chain, so the chain alone only shows edits by
someone who did not bother. A checkpoint signs the head of the chain with a
key only the gateway holds; whoever rewrites the journal cannot produce a
valid checkpoint for the rewritten chain.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from conduit.audit.events import Record, Value

KEY_NAME = "audit_ed25519"
_DOMAIN = "conduit-audit-checkpoint-v1"


def load_or_create_key(key_dir: Path) -> Ed25519PrivateKey:
    """The audit signing key in ``key_dir``; created (0600, with a .pub) if missing."""
    path = key_dir / KEY_NAME
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return key
    key_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (key_dir / f"{KEY_NAME}.pub").write_bytes(pub)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM public key, PEM private key or OpenSSH .pub."""
    data = path.read_bytes()
    loaded: object
    if b"PRIVATE KEY" in data:
        loaded = serialization.load_pem_private_key(data, password=None).public_key()
    elif data.startswith(b"ssh-ed25519"):
        loaded = serialization.load_ssh_public_key(data)
    else:
        loaded = serialization.load_pem_public_key(data)
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return loaded


def fingerprint(key: Ed25519PublicKey) -> str:
    """``SHA256:<base64>`` of the raw public key, as OpenSSH prints fingerprints."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def _message(node: str, seq: int, ts: str, head_seq: int, head_hash: str) -> bytes:
    return f"{_DOMAIN}\n{node}\n{seq}\n{ts}\n{head_seq}\n{head_hash}\n".encode()


def seal(
    key: Ed25519PrivateKey, node: str, seq: int, ts: str, head_hash: str, reason: str
) -> dict[str, Value]:
    """The fields of checkpoint record ``seq``, which seals records 1..seq-1."""
    sig = key.sign(_message(node, seq, ts, seq - 1, head_hash))
    return {
        "head_seq": seq - 1,
        "head_hash": head_hash,
        "key": fingerprint(key.public_key()),
        "sig": base64.b64encode(sig).decode(),
        "reason": reason,
    }


def check(key: Ed25519PublicKey, record: Record) -> str | None:
    """None if ``record`` is a checkpoint validly signed by ``key``, else what is wrong."""
    try:
        head_seq = record["head_seq"]
        head_hash = record["head_hash"]
        sig = base64.b64decode(record["sig"], validate=True)
        message = _message(record["node"], record["seq"], record["ts"], head_seq, head_hash)
    except (KeyError, TypeError, ValueError):
        return "malformed checkpoint"
    if head_seq != record["seq"] - 1 or head_hash != record["prev"]:
        return "checkpoint does not seal the record before it"
    try:
        key.verify(sig, message)
    except InvalidSignature:
        expected = fingerprint(key)
        if record.get("key") != expected:
            return f"signed by another key ({record.get('key')}), not the gateway's ({expected})"
        return "signature does not verify"
    return None
