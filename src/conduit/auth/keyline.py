"""One ``authorized_keys`` line: its options, its key and its comment.

The syntax is OpenSSH's (sshd(8), AUTHORIZED_KEYS FILE FORMAT): optional
comma-separated options, the key type, the base64 key, an optional comment.
Option values are double-quoted and may contain commas and ``\\"``.

What a file gateway does with each option:

- ``from="pattern-list"``: enforced, with OpenSSH's semantics (addresses,
  CIDR, ``*``/``?`` wildcards, ``!`` negation wins). Conduit does not look
  up names (as sshd with ``UseDNS no``): a pattern is matched against the
  client's address.
- ``expiry-time="YYYYMMDD[HHMM[SS]][Z]"``: enforced; local time of the
  gateway unless it ends in ``Z`` (UTC), as in OpenSSH.
- options that only restrict what Conduit never offers (``restrict``,
  ``no-pty``, ``no-port-forwarding``, ``permitopen=``...) or grant it
  (``pty``, ``port-forwarding``...): accepted, nothing to do.
- options that restrict what Conduit cannot enforce or honour
  (``command=``, ``verify-required``, ``cert-authority``, ``principals=``)
  and options it does not know: the key stays listed but refuses every
  login, with the reason in the journal (fail closed; ``conduit check``
  warns).

A line that cannot be read at all (bad quoting, a bad address pattern or
date, no key) is a :class:`KeyLineError` for ``conduit check``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import asyncssh

#: Options with nothing to enforce on a gateway that offers no shell, pty,
#: forwarding, agent, X11 or rc file.
HARMLESS = frozenset(
    {
        "restrict",
        "no-pty",
        "no-port-forwarding",
        "no-agent-forwarding",
        "no-x11-forwarding",
        "no-user-rc",
        "pty",
        "port-forwarding",
        "agent-forwarding",
        "x11-forwarding",
        "user-rc",
        "no-touch-required",  # asyncssh still requires the touch: stricter, not weaker
    }
)
HARMLESS_VALUED = frozenset({"permitopen", "permitlisten", "environment", "tunnel"})
#: Restrictions Conduit cannot honour: the key is refused, saying which.
UNHONOURED = {
    "command": "a forced command cannot be honoured by a file gateway",
    "verify-required": "FIDO user verification is not checked by this gateway",
    "cert-authority": "CA lines are not read here: use [auth] trusted_user_ca_keys",
    "principals": "principals= belongs to a CA line: use users.NAME.principals",
}

_OPTION = re.compile(r'([A-Za-z0-9-]+)(?:="((?:[^"\\]|\\.)*)")?')
_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-|sk-|rsa-)[A-Za-z0-9@.-]+$")
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:*?")


class KeyLineError(ValueError):
    """A line that is not a usable authorized_keys entry (the message says why)."""


Address = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class KeyLine:
    """A parsed line: the key, what restricts it, its comment as written."""

    key: asyncssh.SSHKey
    sources: tuple[str, ...] | None = None  # from= patterns
    expiry: float | None = None  # epoch seconds; expired from then on
    unhonoured: str | None = None  # why every login with it is refused
    comment: str = ""
    text: str = ""

    @property
    def blob(self) -> bytes:
        return bytes(self.key.public_data)

    def refusal(self, source: Address, now: float | None = None) -> str | None:
        """Why this key may not log in from ``source`` now, or None."""
        if self.unhonoured:
            return f"key option refused: {self.unhonoured}"
        if self.expiry is not None and (time.time() if now is None else now) >= self.expiry:
            return "key expired (expiry-time option)"
        if self.sources is not None and not from_allows(self.sources, source):
            return f"source address {source} not allowed by the key's from= option"
        return None


def _split_options(text: str) -> tuple[list[tuple[str, str | None]], str]:
    """The leading options and the rest of the line."""
    options: list[tuple[str, str | None]] = []
    pos = 0
    while True:
        m = _OPTION.match(text, pos)
        if not m or m.end() == pos:
            raise KeyLineError(f"cannot read the key options at {text[pos : pos + 20]!r}")
        value = m.group(2)
        if m.group(2) is None and text.startswith('="', m.end(1)):
            raise KeyLineError(f"unterminated quoted value of option {m.group(1)}")
        if value is not None:
            value = re.sub(r"\\(.)", r"\1", value)
        options.append((m.group(1), value))
        pos = m.end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] in " \t":
            return options, text[pos:].lstrip()
        raise KeyLineError("the key options are not followed by a key")


def parse_line(text: str) -> KeyLine:
    """Parse one authorized_keys line (not blank, not a ``#`` comment)."""
    line = text.strip()
    options: list[tuple[str, str | None]] = []
    first = line.split(None, 1)[0] if line else ""
    if not _KEY_TYPE.match(first):
        options, line = _split_options(line)
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise KeyLineError(
            'not an OpenSSH public key (one .pub line: "ssh-ed25519 AAAA... comment")'
        )
    try:
        key = asyncssh.import_public_key(f"{parts[0]} {parts[1]}")
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise KeyLineError(
            'not an OpenSSH public key (one .pub line: "ssh-ed25519 AAAA... comment")'
        ) from exc
    comment = parts[2].strip() if len(parts) > 2 else ""
    sources: tuple[str, ...] | None = None
    expiry: float | None = None
    unhonoured: str | None = None
    for name, value in options:
        lower = name.lower()
        if lower == "from":
            if value is None:
                raise KeyLineError('from= needs a quoted value: from="10.1.0.0/16"')
            sources = tuple(_check_pattern(p) for p in value.split(","))
        elif lower == "expiry-time":
            if value is None:
                raise KeyLineError('expiry-time= needs a quoted value: expiry-time="20270101"')
            expiry = parse_time(value)
        elif (lower in HARMLESS and value is None) or (
            lower in HARMLESS_VALUED and value is not None
        ):
            continue
        elif unhonoured is None:
            unhonoured = UNHONOURED.get(lower, f"unknown key option {name!r}")
            if lower == "command" and value is None:
                raise KeyLineError("command= needs a quoted value")
    return KeyLine(key, sources, expiry, unhonoured, comment, text.strip())


def parse_time(value: str) -> float:
    """OpenSSH's absolute time: ``YYYYMMDD[HHMM[SS]]``, local time unless ``Z``."""
    utc = value.endswith("Z")
    digits = value[:-1] if utc else value
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if not digits.isdigit() or len(digits) not in formats:
        raise KeyLineError(f"expiry-time {value!r} is not YYYYMMDD[HHMM[SS]][Z]")
    try:
        moment = datetime.strptime(digits, formats[len(digits)])
    except ValueError as exc:
        raise KeyLineError(f"expiry-time {value!r} is not a date") from exc
    return (moment.replace(tzinfo=UTC) if utc else moment.astimezone()).timestamp()


def _check_pattern(pattern: str) -> str:
    body = pattern[1:] if pattern.startswith("!") else pattern
    if not body:
        raise KeyLineError("from= holds an empty pattern")
    if "/" in body:
        try:
            ip_network(body, strict=False)
        except ValueError as exc:
            raise KeyLineError(f"from= pattern {pattern!r} is not a valid network") from exc
    return pattern


def _matches(body: str, address: Address) -> bool:
    if "/" in body:
        network = ip_network(body, strict=False)
        return network.version == address.version and address in network
    if set(body) <= _ADDRESS_CHARS and not any(c in body for c in "*?"):
        try:
            return ip_address(body) == address
        except ValueError:
            pass
    # a wildcard, or a host name pattern: matched against the address (no DNS)
    return fnmatchcase(str(address).lower(), body.lower().replace("[", "[[]"))


def unmapped(address: Address) -> Address:
    """An IPv4 client on a dual-stack socket (``::ffff:10.1.2.3``) as the IPv4
    address it is, as the policy's zones see it."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def from_allows(patterns: tuple[str, ...], address: Address) -> bool:
    """OpenSSH's pattern-list rule: a negated match refuses, else any match allows."""
    address = unmapped(address)
    allowed = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _matches(pattern[1:] if negated else pattern, address):
            if negated:
                return False
            allowed = True
    return allowed
