"""OpenSSH answering a keyboard-interactive prompt with a chosen code, no tty.

``SSH_ASKPASS_REQUIRE=force`` makes ``ssh`` (and ``scp``/``sftp`` through it)
ask a program instead of the terminal; the program here records the prompt it
was given and prints the code the test wrote beside it. Used for the TOTP
second factor, with codes a test computes from the user's secret.
"""

from __future__ import annotations

import os
from pathlib import Path


def answering(folder: Path, code: str) -> dict[str, str]:
    """The environment for a client that answers every prompt with ``code``.

    Prompts asked land in ``folder/prompts``, one per line (see :func:`asked`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "code").write_text(code + "\n")
    script = folder / "askpass"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{folder}/prompts"\ncat "{folder}/code"\n')
    script.chmod(0o700)
    return {
        **os.environ,
        "SSH_ASKPASS": str(script),
        "SSH_ASKPASS_REQUIRE": "force",  # whatever DISPLAY and the tty say
    }


def asked(folder: Path) -> list[str]:
    """The prompts the client put to the askpass program so far."""
    path = folder / "prompts"
    return path.read_text().splitlines() if path.exists() else []


def options(known_hosts: Path, key: Path, source: str = "127.0.0.1") -> list[str]:
    """ssh options for a key and then keyboard-interactive, one prompt, no agent.

    Not ``BatchMode``, which turns keyboard-interactive off; with ``sftp -b``,
    which adds ``BatchMode=yes``, these must come before ``-b`` (ssh keeps the
    first value it is given).
    """
    return [
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=no",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "PreferredAuthentications=publickey,keyboard-interactive",
        "-o", "NumberOfPasswordPrompts=1",
        "-o", f"BindAddress={source}",
        "-i", str(key),
    ]  # fmt: skip
