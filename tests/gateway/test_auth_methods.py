"""Every authentication method a client tries is counted and journalled.

The gateway offers public keys only. OpenSSH clients that prefer passwords ask
with ``none``, hear ``publickey`` and give up; a brute-forcer sends password
and keyboard-interactive requests anyway. Both must show in the journal with
their ``auth_method``, and requests count toward MaxAuthTries.
"""

from __future__ import annotations

import subprocess
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_USERAUTH_FAILURE
from asyncssh.packet import Boolean, NameList, SSHPacket

from tests.support.gateway import RunningGateway, wait_for


def failures(running: RunningGateway) -> list[dict[str, Any]]:
    running.call(running.gateway.noise.flush())
    return running.recorder.of("auth.failure")


def count(events: list[dict[str, Any]], method: str) -> int:
    return sum(int(e.get("count", 1)) for e in events if e["auth_method"] == method)


@pytest.mark.parametrize(
    "preferred", ["password,keyboard-interactive", "none", "password"], ids=str
)
def test_openssh_without_a_key_is_journalled(gw: RunningGateway, preferred: str) -> None:
    result = gw.ssh("true", extra=("-o", f"PreferredAuthentications={preferred}"))
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    events = wait_for(lambda: gw.recorder.of("auth.failure"))
    assert [e["auth_method"] for e in events] == ["none"]
    assert events[0]["user_given"] == "alice"
    assert events[0]["reason"] == "client offered no public key"
    assert not gw.recorder.of("session.start")


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp", "scp-O"])
def test_sftp_and_scp_with_passwords_only_are_journalled(gw: RunningGateway, legacy: bool) -> None:
    only_passwords = ("-o", "PreferredAuthentications=password,keyboard-interactive")
    if legacy:
        result = gw.scp("/etc/hostname", ":/inbox/", legacy=True, extra=only_passwords)
    else:
        argv = ["sftp", "-b", "-", "-P", str(gw.port), *gw.ssh_options(), *only_passwords]
        result = subprocess.run(
            [*argv, "alice@127.0.0.1"],
            input="put /etc/hostname /inbox/\n",
            timeout=60,
            capture_output=True,
            text=True,
        )
    assert result.returncode != 0
    assert wait_for(lambda: gw.recorder.of("auth.failure"))[0]["auth_method"] == "none"
    assert not (gw.area("inbox") / "hostname").exists()


def test_a_login_with_a_key_records_no_failure(gw: RunningGateway) -> None:
    assert gw.sftp("ls /inbox\n").returncode == 0
    assert wait_for(lambda: gw.recorder.of("session.start"))
    assert failures(gw) == []
    assert gw.recorder.of("session.start")[0]["auth_method"] == "publickey"


class Guesser(asyncssh.SSHClient):
    """A brute-forcer: tries passwords and keyboard-interactive whatever the
    server offers (asyncssh's client would only try what is offered)."""

    def __init__(self, guesses: int) -> None:
        self.guesses = guesses

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        handlers = dict(type(conn)._packet_handlers)
        original = handlers[MSG_USERAUTH_FAILURE]

        def failure(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> Any:
            methods = packet.get_namelist()
            partial = packet.get_boolean()
            offered = NameList([*methods, b"keyboard-interactive", b"password"])
            return original(self, pkttype, pktid, SSHPacket(offered + Boolean(partial)))

        handlers[MSG_USERAUTH_FAILURE] = failure
        conn._packet_handlers = handlers

    def password_auth_requested(self) -> str | None:
        self.guesses -= 1
        return f"guess{self.guesses}" if self.guesses >= 0 else None

    def kbdint_auth_requested(self) -> str | None:
        return "" if self.guesses > 0 else None

    def kbdint_challenge_received(self, *args: Any) -> list[str] | None:
        return []


def test_password_guesses_count_toward_max_auth_tries(gw: RunningGateway) -> None:
    tries = gw.config.gateway.limits.max_auth_tries

    async def guess() -> str:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gw.port,
                username="alice",
                client_factory=lambda: Guesser(tries * 3),
                preferred_auth=["password", "keyboard-interactive"],
                client_keys=None,
                known_hosts=str(gw.known_hosts),
                agent_path=None,
                login_timeout=30,
            ):
                return "connected"
        except (asyncssh.DisconnectError, asyncssh.PermissionDenied) as exc:
            return type(exc).__name__

    assert gw.call(guess(), timeout=60) in ("DisconnectError", "PermissionDenied")
    events = failures(gw)
    methods = {e["auth_method"] for e in events}
    assert "password" in methods
    # the client's first "none" is free (as in sshd); every guess counts
    total = sum(int(e.get("count", 1)) for e in events)
    assert total == tries
    assert "password" not in str([e.get("reason") for e in events if "guess" in str(e)])
    assert not any("guess" in str(v) for e in events for v in e.values())  # never a password


def test_long_user_names_are_capped_in_records(gw: RunningGateway) -> None:
    long = "x" * 900 + "é" * 50

    async def attempt() -> None:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gw.port,
                username=long,
                client_keys=[asyncssh.generate_private_key("ssh-ed25519")],
                known_hosts=str(gw.known_hosts),
                agent_path=None,
            ):
                pass
        except (asyncssh.DisconnectError, asyncssh.PermissionDenied):
            pass

    gw.call(attempt())
    events = failures(gw)
    assert events
    for event in events:
        assert len(event["user_given"]) < 100
        assert event["user_given"] == "x" * 64 + "...[886 more characters]"
