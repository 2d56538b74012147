"""OpenSSH user certificates: read one, and judge it for a login.

The certificate is read here from its wire format (OpenSSH's
``PROTOCOL.certkeys``), not through asyncssh: asyncssh refuses a certificate
with an unknown critical option while decoding it, without saying which, and
keeps serial, key id and validity private. Reading it here lets every
refusal name its reason, and the journal name the key id, serial, CA and
principal. The CA's signature over the certificate is verified with
asyncssh's public key API (:func:`signature_valid`) once the CA is known to
be trusted, and before anything else in it is believed.

Validity: the gateway's clock, with ``[auth] certificate_clock_skew`` (60 s
by default) of grace before ``valid_after`` only, for a CA whose clock runs a
little ahead; ``valid_before`` is honoured to the second.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_network

import asyncssh

from conduit.auth.keyline import unmapped

CERT_SUFFIX = "-cert-v01@openssh.com"
USER_CERT = 1
HOST_CERT = 2

#: The key fields a certificate carries, by key type (each one SSH string or mpint).
_KEY_FIELDS = {
    "ssh-ed25519": 1,
    "ssh-rsa": 2,
    "ssh-dss": 4,
    "ecdsa-sha2-nistp256": 2,
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}
#: Critical options Conduit understands; any other refuses the certificate.
KNOWN_CRITICAL = frozenset({"source-address", "force-command", "verify-required"})


class CertificateError(ValueError):
    """Not a certificate this gateway can read or trust (the message says why)."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """What a certificate says, once its CA's signature checked out."""

    key_blob: bytes  # the certified plain key
    ca_blob: bytes
    ca_fingerprint: str
    serial: int
    cert_type: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical: dict[str, bytes] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()
    signed: bytes = field(default=b"", repr=False)  # what the CA signed
    signature: bytes = field(default=b"", repr=False)


def key_from_blob(blob: bytes) -> asyncssh.SSHKey:
    """A plain public key from its wire blob (asyncssh's public API reads text)."""
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    alg = blob[4 : 4 + n].decode("ascii", "replace")
    key = asyncssh.import_public_key(f"{alg} {base64.b64encode(blob).decode()}")
    if key.public_data != blob:
        raise asyncssh.KeyImportError("not a plain public key")
    return key


def is_certificate(blob: bytes) -> bool:
    """True if ``blob`` is an OpenSSH certificate (by its algorithm name)."""
    if len(blob) < 4:
        return False
    (n,) = struct.unpack(">I", blob[:4])
    return blob[4 : 4 + n].endswith(CERT_SUFFIX.encode())


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CertificateError("truncated certificate")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())

    def raw_string(self) -> bytes:
        """A string with its length prefix, as it appears in a key blob."""
        start = self.pos
        self.string()
        return self.data[start : self.pos]

    def done(self) -> bool:
        return self.pos >= len(self.data)


def _pairs(data: bytes) -> dict[str, bytes]:
    r = _Reader(data)
    out: dict[str, bytes] = {}
    while not r.done():
        name = r.string().decode("utf-8", "backslashreplace")
        out[name] = r.string()
    return out


def signature_valid(cert: Certificate) -> bool:
    """Whether the CA named in ``cert`` signed it. Checked only once the CA is
    known to be trusted, so a stranger's CA key costs no signature check."""
    try:
        return bool(key_from_blob(cert.ca_blob).verify(cert.signed, cert.signature))
    except (asyncssh.KeyImportError, ValueError):
        return False


def parse(blob: bytes) -> Certificate:
    """Read an OpenSSH certificate. Nothing in it is to be believed before
    :func:`signature_valid` (``Identity.check_certificate`` asks it)."""
    r = _Reader(blob)
    alg = r.string().decode("ascii", "replace")
    if not alg.endswith(CERT_SUFFIX):
        raise CertificateError(f"{alg!r} is not an OpenSSH certificate type")
    key_alg = alg[: -len(CERT_SUFFIX)] + ("@openssh.com" if alg.startswith("sk-") else "")
    count = _KEY_FIELDS.get(key_alg)
    if count is None:
        raise CertificateError(f"certificate key type {key_alg!r} is not supported")
    r.string()  # nonce
    fields = b"".join(r.raw_string() for _ in range(count))
    name = key_alg.encode()
    key_blob = struct.pack(">I", len(name)) + name + fields
    serial = r.uint64()
    cert_type = r.uint32()
    key_id = r.string().decode("utf-8", "backslashreplace")
    principals_r = _Reader(r.string())
    principals = []
    while not principals_r.done():
        principals.append(principals_r.string().decode("utf-8", "backslashreplace"))
    valid_after, valid_before = r.uint64(), r.uint64()
    critical = _pairs(r.string())
    extensions = tuple(_pairs(r.string()))
    r.string()  # reserved
    ca_blob = r.string()
    signed = blob[: r.pos]
    signature = r.string()
    if not r.done():
        raise CertificateError("trailing bytes after the certificate signature")
    try:
        ca = key_from_blob(ca_blob)
        key_from_blob(key_blob)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise CertificateError(f"certificate holds an unreadable key ({exc})") from exc
    return Certificate(
        key_blob=key_blob,
        ca_blob=ca_blob,
        ca_fingerprint=ca.get_fingerprint("sha256"),
        serial=serial,
        cert_type=cert_type,
        key_id=key_id,
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical=critical,
        extensions=extensions,
        signed=signed,
        signature=signature,
    )


def source_addresses(value: bytes) -> list[str]:
    """The ``source-address`` option's CIDR list."""
    try:
        text = _Reader(value).string().decode("ascii", "replace")
    except CertificateError:
        return []
    return [part.strip() for part in text.split(",") if part.strip()]


def source_allowed(value: bytes, address: IPv4Address | IPv6Address) -> bool:
    """OpenSSH: the client must be in one of the listed networks; a bad list refuses."""
    address = unmapped(address)
    try:
        networks = [ip_network(p, strict=False) for p in source_addresses(value)]
    except ValueError:
        return False
    return any(n.version == address.version and address in n for n in networks)


def option_refusal(cert: Certificate, address: IPv4Address | IPv6Address) -> str | None:
    """Why the certificate's critical options refuse this login, or None."""
    for name, value in cert.critical.items():
        if name not in KNOWN_CRITICAL:
            return f"certificate has unknown critical option {name!r}"
        if name == "force-command":
            return "certificate has a force-command, which a file gateway cannot honour"
        if name == "verify-required":
            return "certificate requires FIDO user verification, which this gateway does not check"
        if name == "source-address" and not source_allowed(value, address):
            allowed = ",".join(source_addresses(value)) if value else ""
            return f"source address {address} not in the certificate's source-address {allowed}"
    return None


def validity_refusal(cert: Certificate, now: float, skew: float) -> str | None:
    if now + skew < cert.valid_after:
        return "certificate not yet valid"
    if now >= cert.valid_before:
        return "certificate expired"
    return None
