"""Build everything ``conduit serve`` builds from a policy file, without serving.

``conduit check``, ``conduit serve``, ``conduit reload`` and the gateway's
SIGHUP handler all go through :func:`inspect`, so a file that passes
``check`` is a file the gateway starts with (or reloads to): the same parse,
the same cross-reference checks (:mod:`conduit.site.check`), and then what
start-up does with the values: the compiled :class:`~conduit.policy.Policy`,
every user key (with its options), the trusted CAs and the revocation list,
every host key file, every device's settings
(:func:`conduit.storage.relay.settings.device_problems`). Nothing is
created, no socket is opened, no device is contacted.

Every problem is one line naming the file, the line and the key.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from conduit.auth import certs
from conduit.auth.identity import Identity
from conduit.auth.identity import load as load_identity
from conduit.config.load import ConfigError, key_of, load, locate
from conduit.config.model import Config
from conduit.inspect.anchors import anchor_problems
from conduit.policy import Policy, PolicyError
from conduit.site.check import Problem, check

DEFAULT_HOST_KEY = "host_ed25519"
"""The host key ``serve`` generates in ``data_dir`` when ``host_keys`` is empty."""


@dataclass(frozen=True, slots=True)
class Site:
    """What the gateway is built from: the config and what it compiles to.

    From ``inspect(..., files=False)`` the identity is empty (nothing read).
    """

    config: Config
    policy: Policy
    identity: Identity
    """Who may log in: keys, CAs, revocation (empty when ``files=False``)."""
    host_keys: list[asyncssh.SSHKey]
    """The configured host keys, or the existing generated one; empty: serve makes one."""


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of :func:`inspect`: every problem and, if none is an error, the site."""

    source: Path
    lines: list[str]
    """Every problem, one line each, in file order (errors and warnings)."""
    errors: list[str]
    site: Site | None = None

    def error(self) -> ConfigError:
        return ConfigError(self.source.resolve(), self.errors)


class _Findings:
    """Problems with their lines, from a loc like ``("devices", "plc", "identity")``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.problems: list[Problem] = []

    def error(self, loc: tuple[str, ...], message: str) -> None:
        line = locate(self.text, list(loc)) if self.text else None
        self.problems.append(Problem("error", key_of(loc), message, line, loc))


def _is_empty(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def _read_private_key(path: Path) -> tuple[asyncssh.SSHKey | None, str | None]:
    try:
        return asyncssh.read_private_key(path), None
    except FileNotFoundError:
        return None, f"{path}: no such file"
    except IsADirectoryError:
        return None, f"{path}: is a folder, not a file"
    except OSError as exc:
        return None, f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})"
    except (asyncssh.KeyImportError, ValueError):
        return None, f"{path}: not an OpenSSH private key (or protected by a passphrase)"


def _host_keys(config: Config, found: _Findings) -> list[asyncssh.SSHKey]:
    keys: list[asyncssh.SSHKey] = []
    for index, path in enumerate(config.gateway.host_keys):
        key, why = _read_private_key(path)
        if why:
            found.error(("gateway", "host_keys", str(index)), why)
        elif key is not None:
            keys.append(key)
    if not config.gateway.host_keys:
        default = config.gateway.data_dir / DEFAULT_HOST_KEY
        if default.exists():  # else serve generates it
            key, why = _read_private_key(default)
            if why:
                found.error(("gateway", "data_dir"), f"the generated host key {why}")
            elif key is not None:
                keys.append(key)
    return keys


def _host_certificates(config: Config, found: _Findings, host_keys: list[asyncssh.SSHKey]) -> None:
    """Each host certificate must load, be a host certificate, and certify a host key."""
    ours = {bytes(k.public_data) for k in host_keys}
    for index, path in enumerate(config.gateway.host_certificates):
        loc = ("gateway", "host_certificates", str(index))
        try:
            cert = certs.parse(bytes(asyncssh.read_certificate(path).public_data))
        except FileNotFoundError:
            found.error(loc, f"{path}: no such file")
            continue
        except OSError as exc:
            found.error(loc, f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})")
            continue
        except (asyncssh.KeyImportError, ValueError):
            found.error(loc, f"{path}: not an OpenSSH certificate (ssh-keygen -s CA -h ...)")
            continue
        if cert.cert_type != certs.HOST_CERT:
            found.error(loc, f"{path}: a user certificate, not a host one (sign with -h)")
        elif cert.key_blob not in ours:
            found.error(loc, f"{path}: certifies none of the gateway's host keys")


def _folders(config: Config, found: _Findings) -> None:
    """Folders serve creates must be folders (or creatable) and not files."""
    for loc, path in (
        (("gateway", "data_dir"), config.gateway.data_dir),
        (("audit", "journal"), config.audit.journal),
    ):
        if path.exists() and not path.is_dir():
            found.error(loc, f"{path} exists and is not a folder")


def _identity(config: Config, found: _Findings) -> Identity:
    """Each user's keys (with their options), the trusted CAs, the revocation list."""
    identity, findings = load_identity(config)
    for f in findings:
        line = locate(found.text, list(f.loc)) if found.text else None
        found.problems.append(Problem(f.severity, key_of(f.loc), f.message, line, f.loc))
    return identity


def identity(config: Config) -> Identity:
    """:func:`_identity` for a config handed to the gateway directly (the embedded
    default, tests): :class:`ConfigError` names each error."""
    found = _Findings("")
    built = _identity(config, found)
    errors = [str(p) for p in found.problems if p.severity == "error"]
    if errors:
        raise ConfigError(config.source, errors)
    return built


def _siem(config: Config, found: _Findings) -> None:
    """A TLS sink's files must load (the sink would otherwise retry forever)."""
    for index, sink in enumerate(config.audit.siem):
        if sink.ca is None and sink.cert is None:
            continue
        loc = ("audit", "siem", str(index))
        try:
            ctx = ssl.create_default_context(cafile=str(sink.ca) if sink.ca else None)
        except (OSError, ssl.SSLError) as exc:
            found.error((*loc, "ca"), f"{sink.ca}: cannot load ({_reason(exc)})")
            continue
        if sink.cert:
            try:
                ctx.load_cert_chain(str(sink.cert), str(sink.key or sink.cert))
            except (OSError, ssl.SSLError) as exc:
                found.error((*loc, "cert"), f"{sink.cert}: cannot load ({_reason(exc)})")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__


def _devices(config: Config, found: _Findings) -> None:
    from conduit.storage.relay.settings import device_problems

    for name, device in config.devices.items():
        for key, message in device_problems(device):
            found.error(("devices", name, *key), message)


def inspect(path: Path | str, *, files: bool = True) -> Report:
    """Parse, check and build ``path``; nothing is written, nothing contacted.

    ``files=False`` skips what only serving needs (key files, device
    credentials, folders): ``conduit explain`` answers questions about the
    policy alone, also on a desk without the gateway's keys.
    """
    path = Path(path)
    try:
        config = load(path)
        text = path.read_text(encoding="utf-8")
    except ConfigError as exc:
        return Report(path, exc.problems, exc.problems)
    except (OSError, UnicodeDecodeError) as exc:
        problem = [f"cannot read: {exc.__class__.__name__}"]
        return Report(path, problem, problem)
    found = _Findings(text)
    if _is_empty(text):
        message = (
            "the file is empty: nothing to serve and nobody to serve it to"
            " (start from `conduit init`)"
        )
        found.problems.append(Problem("error", "(file)", message, 1))
        return _report(path, found, None)
    found.problems.extend(check(config, text))
    host_keys: list[asyncssh.SSHKey] = []
    ident = Identity({}, {}, {})
    if files:
        _folders(config, found)
        host_keys = _host_keys(config, found)
        _host_certificates(config, found, host_keys)
        ident = _identity(config, found)
        _siem(config, found)
        _devices(config, found)
        for loc, message in anchor_problems(config):
            found.error(loc, message)
    site = None
    if not any(p.severity == "error" for p in found.problems):
        try:
            policy = Policy(config)
        except PolicyError as exc:
            found.error((), str(exc))
        else:
            site = Site(config, policy, ident, host_keys)
    return _report(path, found, site)


def _report(path: Path, found: _Findings, site: Site | None) -> Report:
    ordered = sorted(found.problems, key=lambda p: p.line or 0)
    errors = [str(p) for p in ordered if p.severity == "error"]
    return Report(path, [str(p) for p in ordered], errors, None if errors else site)


def build(path: Path | str) -> Site:
    """The site for ``path``, or :class:`ConfigError` with every error (one line each)."""
    report = inspect(path)
    if report.site is None:
        raise report.error()
    return report.site


def load_checked(path: Path | str) -> Config:
    """Load ``path``, check it and build what the gateway builds from it
    (:func:`build`); any error raises :class:`ConfigError`.

    This is what a reload uses: if it raises, keep the policy in force.
    """
    return build(path).config
