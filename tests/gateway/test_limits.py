"""Authentication and the limits asyncssh lacks: MaxAuthTries, MaxStartups, sessions, idle."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncssh
import pytest

from tests.support.gateway import RunningGateway, random_file, sha256, wait_for


def test_unknown_key_refused_and_recorded(gw: RunningGateway, tmp_path: Path) -> None:
    result = gw.sftp("ls /\n", user="alice", key=gw.keys["mallory"])
    assert result.returncode != 0
    failures = wait_for(lambda: gw.recorder.of("auth.failure"))
    assert failures and failures[0]["user_given"] == "alice"
    assert "password" not in str(failures).lower()


def test_unknown_user_refused(gw: RunningGateway) -> None:
    result = gw.sftp("ls /\n", user="mallory")
    assert result.returncode != 0
    assert wait_for(lambda: gw.recorder.of("auth.failure"))[0]["user_given"] == "mallory"


def test_another_users_key_refused(gw: RunningGateway) -> None:
    result = gw.sftp("ls /\n", user="alice", key=gw.keys["bob"])
    assert result.returncode != 0


def test_max_auth_tries_disconnects(make_gateway, keys: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    running = make_gateway()
    limits = running.config.gateway.limits
    tries = limits.max_auth_tries

    async def offer_many() -> str:
        wrong = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(tries + 3)]
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                running.port,
                username="alice",
                client_keys=wrong,
                known_hosts=str(running.known_hosts),
                agent_path=None,
            ):
                return "connected"
        except (asyncssh.DisconnectError, asyncssh.PermissionDenied) as exc:
            return type(exc).__name__

    outcome = running.call(offer_many())
    assert outcome in ("DisconnectError", "PermissionDenied")
    # the first failure is recorded as it happens, the rest in a summary
    assert wait_for(lambda: running.recorder.of("auth.failure"))
    assert attempts(running, "publickey") == tries


def attempts(running: RunningGateway, method: str) -> int:
    """Failed attempts with ``method`` in the journal, summaries flushed."""
    running.call(running.gateway.noise.flush())
    return sum(
        int(e.get("count", 1))
        for e in running.recorder.of("auth.failure")
        if e["auth_method"] == method
    )


def test_source_outside_every_zone_cannot_log_in(make_gateway, keys: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    from tests.support.gateway import policy_text

    running = make_gateway()
    text = policy_text(running.root, keys).replace(
        'networks = ["127.0.0.0/8"]', 'networks = ["127.0.0.1/32"]'
    )
    other = make_gateway(text=text)
    result = other.ssh("ls", extra=("-o", "BindAddress=127.0.0.2"))
    assert result.returncode != 0
    assert wait_for(lambda: other.recorder.of("auth.failure"))
    assert other.recorder.of("auth.failure")[0]["reason"] == "source address is in no zone"
    assert other.sftp("ls /inbox\n").returncode == 0  # from 127.0.0.1 it works


def test_idle_handshake_flood_does_not_lock_out_users(gw: RunningGateway, tmp_path: Path) -> None:
    flood = []
    try:
        for i in range(200):
            s = socket.create_connection(
                ("127.0.0.1", gw.port), timeout=5, source_address=("127.0.0.3", 0)
            )
            if i % 2:
                s.sendall(b"SSH-2.0-flood\r\n")  # a banner, then nothing
            flood.append(s)
        limit = gw.config.gateway.limits.max_startups_per_source
        assert wait_for(lambda: gw.gateway.counters.unauthenticated <= limit, timeout=10)
        src = random_file(tmp_path / "during-flood.bin", 300_000)
        result = gw.scp(str(src), ":/inbox/")
        assert result.returncode == 0, result.stderr
        assert sha256(gw.area("inbox") / "during-flood.bin") == sha256(src)
    finally:
        for s in flood:
            s.close()


@pytest.fixture
def tight(make_gateway):  # type: ignore[no-untyped-def]
    from tests.support.gateway import policy_text

    def build(limits: str) -> RunningGateway:
        running = make_gateway()
        text = (
            policy_text(running.root, running.keys)
            .replace("[gateway.limits]\n", f"[gateway.limits]\n{limits}\n")
            .replace("idle_timeout = 0\n", "")
        )
        return make_gateway(text=text)

    return build


def test_sessions_per_connection_limit(tight) -> None:  # type: ignore[no-untyped-def]
    running = tight("max_sessions_per_connection = 1")

    async def scenario() -> bool:
        async with running.connect() as conn, conn.start_sftp_client():
            try:
                async with conn.start_sftp_client():
                    return True
            except asyncssh.ChannelOpenError:
                return False

    assert running.call(scenario()) is False


def test_sessions_per_user_limit(tight) -> None:  # type: ignore[no-untyped-def]
    running = tight("max_sessions_per_user = 1")

    async def scenario() -> list[str]:
        reasons = []
        async with running.connect() as first, running.connect() as second:
            async with first.start_sftp_client():
                for _ in range(3):  # a client retrying in a loop
                    try:
                        async with second.start_sftp_client():
                            reasons.append("opened")
                    except asyncssh.ChannelOpenError as exc:
                        reasons.append(exc.reason)
        return reasons

    # the client hears why, not a bare "Session refused"
    assert running.call(scenario()) == ["at most 1 sessions per user"] * 3
    # journalled once per connection, not once per attempt
    refused = running.recorder.of("session.start", "denied")
    assert [r["reason"] for r in refused] == ["at most 1 sessions per user"]
    assert refused[0]["principal"] == "alice"


def test_idle_connection_is_closed(tight) -> None:  # type: ignore[no-untyped-def]
    running = tight("idle_timeout = 1")

    async def scenario() -> bool:
        async with running.connect() as conn, conn.start_sftp_client() as sftp:
            await sftp.listdir("/inbox")
            await asyncio.sleep(3)
            try:
                await sftp.listdir("/inbox")
                return False
            except (asyncssh.Error, ConnectionError, OSError):
                return True

    assert running.call(scenario(), timeout=30) is True


def test_login_grace_time(tight) -> None:  # type: ignore[no-untyped-def]
    running = tight("login_grace_time = 1")
    s = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    try:
        s.settimeout(10)
        data = b""
        while chunk := s.recv(4096):  # the server closes the connection
            data += chunk
        assert data.startswith(b"SSH-2.0-Conduit")
    finally:
        s.close()
    # dropped by the gateway: journalled with the other refused connections
    refused = wait_for(lambda: running.recorder.of("connection.refused"))
    assert [(r["source"], r["reason"]) for r in refused] == [
        ("127.0.0.1", "login grace time expired before authentication")
    ]
