"""Trust anchors checked before they are relied on (``conduit check``, start, reload).

Every file an ``[inspect.trust.NAME]`` names must be usable now, not at the
first firmware upload: the allowed-signers file parses, every OpenPGP key
file imports (into a throw-away keyring, never the gateway's or a user's),
every vendor list parses by the manifest rules. This runs synchronously,
as the rest of :func:`conduit.site.build.inspect` does, and opens no socket:
whether clamd answers is asked by ``conduit check`` alone
(:func:`conduit.inspect.clamd.ping`).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from conduit.config.model import Config
from conduit.inspect.manifest import Manifest, ManifestError
from conduit.inspect.sshsig import allowed_signers_problems

MAX_LIST = 64 * 1024 * 1024

Problem = tuple[tuple[str, ...], str]


def _gpg_import(key: Path, timeout: float) -> str | None:
    """None if ``key`` holds an OpenPGP public key gpg imports; else why not."""
    if not key.is_file():
        return f"{key}: no such file"
    with tempfile.TemporaryDirectory(prefix="conduit-gpg-check-") as home:
        try:
            result = subprocess.run(
                [
                    "gpg",
                    "--batch",
                    "--no-tty",
                    "--no-autostart",
                    "--homedir",
                    home,
                    "--status-fd",
                    "1",
                    "--import",
                    str(key),
                ],
                capture_output=True,
                timeout=timeout,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{key}: gpg could not run ({exc.__class__.__name__})"
    if b"[GNUPG:] IMPORT_OK" not in result.stdout:
        return f"{key}: no OpenPGP public key in it (gpg imported nothing)"
    return None


def _list_problem(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_LIST:
            return f"{path}: larger than {MAX_LIST} bytes"
        Manifest.parse(path.read_bytes(), str(path))
    except FileNotFoundError:
        return f"{path}: no such file"
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})"
    except ManifestError as exc:
        return str(exc)
    return None


def anchor_problems(config: Config) -> list[Problem]:
    """Each unusable trust-anchor file, with the key that names it."""
    timeout = config.inspect.verify_timeout
    problems: list[Problem] = []
    for name, trust in config.inspect.trust.items():
        loc = ("inspect", "trust", name)
        if trust.ssh_allowed_signers is not None:
            for line in allowed_signers_problems(trust.ssh_allowed_signers):
                problems.append(((*loc, "ssh_allowed_signers"), line))
        for index, key in enumerate(trust.openpgp_keys):
            bad_key = _gpg_import(key, timeout)
            if bad_key:
                problems.append(((*loc, "openpgp_keys", str(index)), bad_key))
        for index, path in enumerate(trust.sha256_lists):
            bad_list = _list_problem(path)
            if bad_list:
                problems.append(((*loc, "sha256_lists", str(index)), bad_list))
    return problems
