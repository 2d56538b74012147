"""Everything a login is judged by, built once per policy: :class:`Identity`.

:func:`load` reads the users' keys (``keys`` and ``authorized_keys`` files),
the trusted user CAs and the revocation list, and returns the problems it
met, each pointing at the policy key it comes from (``conduit check`` prints
them; an error keeps the gateway from starting and a reload from applying).
The gateway then asks :meth:`Identity.check_key` and
:meth:`Identity.check_certificate` for each attempt; both answer with a
:class:`Verdict` whose reason goes to the journal, never to the client.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Literal

import asyncssh

from conduit.auth import certs, revoked
from conduit.auth.keyline import KeyLine, KeyLineError, parse_line
from conduit.config.model import Config

Address = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem with the identity sources, at a policy key (``loc``)."""

    severity: Literal["error", "warning"]
    loc: tuple[str, ...]
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one attempt: ``reason`` None means it may log in."""

    reason: str | None
    principal: str | None = None  # the certificate principal used
    fields: dict[str, Any] = field(default_factory=dict)  # what the journal adds

    @property
    def allowed(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class Identity:
    keys: Mapping[str, Mapping[bytes, KeyLine]]  # user -> key blob -> line
    principals: Mapping[str, frozenset[str]]  # user -> accepted principals
    cas: Mapping[bytes, str]  # trusted CA blob -> its fingerprint
    revocation: revoked.Revocation = field(default_factory=revoked.Revocation)
    skew: float = 60.0

    def keys_of(self, user: str) -> frozenset[bytes]:
        return frozenset(self.keys.get(user, {}))

    def signers_of(self, user: str, now: float | None = None) -> frozenset[bytes]:
        """``user``'s keys that may sign a decision (an approval) now.

        Not a revoked key, an expired one or one whose options refuse every
        login: a key that could not log in must not release a file either.
        ``from=`` does not apply: a signature is made on the gateway's host,
        not over a connection.
        """
        now = time.time() if now is None else now
        return frozenset(
            blob
            for blob, line in self.keys.get(user, {}).items()
            if line.unhonoured is None
            and (line.expiry is None or now < line.expiry)
            and not self.revocation.key_revoked(blob)
        )

    def signers(self, now: float | None = None) -> dict[str, frozenset[bytes]]:
        """:meth:`signers_of` for every user (the CLI looks up whose key it holds)."""
        return {user: self.signers_of(user, now) for user in self.keys}

    def check_key(
        self, user: str, blob: bytes, source: Address, now: float | None = None
    ) -> Verdict:
        line = self.keys.get(user, {}).get(blob)
        if line is None:
            return Verdict("unknown user or key")
        why = self.revocation.key_revoked(blob)
        if why:
            return Verdict(why)
        return Verdict(line.refusal(source, now))

    def check_certificate(
        self, user: str, cert: certs.Certificate, source: Address, now: float | None = None
    ) -> Verdict:
        now = time.time() if now is None else now
        facts = {
            "cert_key_id": cert.key_id,
            "cert_serial": cert.serial,
            "cert_ca": cert.ca_fingerprint,
        }

        def refuse(reason: str, principal: str | None = None) -> Verdict:
            return Verdict(reason, principal, facts)

        if cert.ca_blob not in self.cas:
            return refuse("certificate signed by a CA that is not trusted")
        if not certs.signature_valid(cert):
            return refuse("invalid CA signature on the certificate")
        if cert.cert_type != certs.USER_CERT:
            return refuse("a host certificate cannot log in as a user")
        why = self.revocation.cert_revoked(cert.key_blob, cert.ca_blob, cert.serial, cert.key_id)
        if why:
            return refuse(why)
        why = certs.validity_refusal(cert, now, self.skew)
        if why:
            return refuse(why)
        accepted = self.principals.get(user)
        if accepted is None:
            return refuse("unknown user")
        if not cert.principals:
            return refuse("certificate names no principal")
        principal = next((p for p in cert.principals if p in accepted), None)
        if principal is None:
            return refuse(f"no certificate principal is accepted for user {user}")
        why = certs.option_refusal(cert, source)
        if why:
            return refuse(why, principal)
        return Verdict(None, principal, {**facts, "cert_principal": principal})


def _user_keys(config: Config, found: list[Finding]) -> dict[str, dict[bytes, KeyLine]]:
    result: dict[str, dict[bytes, KeyLine]] = {}
    for name, user in config.users.items():
        lines: dict[bytes, KeyLine] = {}
        for index, text in enumerate(user.keys):
            loc = ("users", name, "keys", str(index))
            _add(lines, text, loc, "", found)
        if user.authorized_keys is not None:
            _read_file(lines, user.authorized_keys, ("users", name, "authorized_keys"), found)
        result[name] = lines
    return result


def _add(
    lines: dict[bytes, KeyLine], text: str, loc: tuple[str, ...], where: str, found: list[Finding]
) -> None:
    try:
        line = parse_line(text)
    except KeyLineError as exc:
        found.append(Finding("error", loc, f"{where}{exc}"))
        return
    if line.expiry is not None and line.expiry <= time.time():
        found.append(Finding("warning", loc, f"{where}this key has expired (expiry-time)"))
    if line.unhonoured:
        found.append(
            Finding("warning", loc, f"{where}this key refuses every login: {line.unhonoured}")
        )
    # The first line for a key wins, as in sshd.
    lines.setdefault(line.blob, line)


def _read_file(
    lines: dict[bytes, KeyLine], path: Path, loc: tuple[str, ...], found: list[Finding]
) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        found.append(Finding("error", loc, f"{path}: no such file"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        found.append(Finding("error", loc, f"{path}: cannot read ({exc.__class__.__name__})"))
        return
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            _add(lines, raw, loc, f"{path} line {number}: ", found)


def _cas(paths: list[Path], found: list[Finding]) -> dict[bytes, str]:
    cas: dict[bytes, str] = {}
    for index, path in enumerate(paths):
        loc = ("auth", "trusted_user_ca_keys", str(index))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            found.append(Finding("error", loc, f"{path}: no such file"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            found.append(Finding("error", loc, f"{path}: cannot read ({exc.__class__.__name__})"))
            continue
        count = 0
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            try:
                key = asyncssh.import_public_key(raw.strip())
            except (asyncssh.KeyImportError, ValueError):
                found.append(
                    Finding("error", loc, f"{path} line {number}: not an OpenSSH public key")
                )
                continue
            cas[bytes(key.public_data)] = key.get_fingerprint("sha256")
            count += 1
        if not count and not any(f.loc == loc for f in found):
            found.append(Finding("error", loc, f"{path}: holds no CA key"))
    return cas


def load(config: Config) -> tuple[Identity, list[Finding]]:
    """Build the identity sources of ``config``; the findings say what is wrong."""
    found: list[Finding] = []
    keys = _user_keys(config, found)
    principals = {
        name: frozenset(user.principals if user.principals is not None else [name])
        for name, user in config.users.items()
    }
    cas = _cas(list(config.auth.trusted_user_ca_keys), found)
    try:
        revocation = revoked.load(config.auth.revoked_keys)
    except revoked.RevocationError as exc:
        found.append(Finding("error", ("auth", "revoked_keys"), str(exc)))
        revocation = revoked.Revocation()
    identity = Identity(keys, principals, cas, revocation, config.auth.certificate_clock_skew)
    return identity, found
