"""The second factor through real clients: OpenSSH answering the TOTP prompt.

OpenSSH's ``scp``/``sftp`` answer keyboard-interactive through ``SSH_ASKPASS``
(``SSH_ASKPASS_REQUIRE=force``): a two-line script prints the code this test
computed from the user's secret with pyotp. Hostile cases first: a key proven
for one user never completes another user's code, keyboard-interactive alone
never logs in, wrong and replayed codes are refused and counted, a missing
enrolment is refused with its reason. One gateway serves the whole module
(each test uses its own user, since every code spends a time-step).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pyotp
import pytest
from asyncssh.constants import MSG_USERAUTH_FAILURE
from asyncssh.packet import Boolean, NameList, SSHPacket

from conduit.auth.secrets import KEY_FILE, SecretStore
from conduit.auth.totp import STEP
from conduit.config import parse
from conduit.gateway.twofactor import PROMPT
from tests.support import askpass
from tests.support.gateway import (
    RunningGateway,
    make_key,
    policy_text,
    random_file,
    sha256,
    start_gateway,
    stop_gateway,
    wait_for,
)

USERS = {
    "alice": "engineer",  # sftp, then the replay
    "dave": "engineer",  # scp
    "frank": "engineer",  # wrong codes
    "bob": "engineer",  # never enrolled
    "carol": "admin",  # TOTP by role, from a zone without it
    "erin": "engineer",  # whose code an attacker holding alice's key tries
    "gina": "engineer",  # asyncssh client, partial success details
}
ENROLLED = [u for u in USERS if u != "bob"]
OPS = '["list", "read", "write", "mkdir", "rename", "delete"]'


def policy(root: Path, keys: dict[str, Path]) -> str:
    users = "".join(
        f'\n[users.{name}]\nkeys = ["{keys[name].with_suffix(".pub").read_text().strip()}"]\n'
        f'roles = ["{role}"]\n'
        for name, role in USERS.items()
    )
    grants = f'[{{ target = "inbox", ops = {OPS} }}, {{ target = "plantbox", ops = {OPS} }}]'
    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[gateway.limits]
max_startups = 16
idle_timeout = 0
max_auth_tries = 4

[zones.office]
level = 4
networks = ["127.0.0.1/32"]

[zones.plant]
level = 2
networks = ["127.0.0.2/32"]

[areas.inbox]
zone = "office"
path = "{root}/areas/inbox"

[areas.plantbox]
zone = "plant"
path = "{root}/areas/plantbox"

[roles.engineer]
grants = {grants}

[roles.admin]
grants = {grants}

[auth.second_factor]
totp_zones = ["office"]
totp_roles = ["admin"]
{users}
"""


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningGateway, dict[str, str]]]:
    root = tmp_path_factory.mktemp("totp")
    keys = {name: make_key(root, name) for name in USERS}
    for area in ("inbox", "plantbox"):
        (root / "areas" / area).mkdir(parents=True)
    store = SecretStore.open(root / "data")
    secrets = {name: store.enrol(name) for name in ENROLLED}
    store.close()
    config = parse(policy(root, keys), source=root / "conduit.toml")
    running = start_gateway(config, keys, root)
    yield running, secrets
    stop_gateway(running)


@pytest.fixture
def gw(site: tuple[RunningGateway, dict[str, str]]) -> RunningGateway:
    return site[0]


@pytest.fixture
def secrets(site: tuple[RunningGateway, dict[str, str]]) -> dict[str, str]:
    return site[1]


def now_code(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(int(time.time()) + offset * STEP)


def client(
    gw: RunningGateway, tool: str, user: str, code: str, *, source: str = "127.0.0.1"
) -> tuple[list[str], dict[str, str]]:
    """argv options and environment for OpenSSH answering the prompt with ``code``."""
    env = askpass.answering(gw.root / f"askpass-{user}", code)
    port = ["-P" if tool in ("scp", "sftp") else "-p", str(gw.port)]
    return [*port, *askpass.options(gw.known_hosts, gw.keys[user], source)], env


def sftp(
    gw: RunningGateway, user: str, code: str, commands: str, source: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    options, env = client(gw, "sftp", user, code, source=source)
    return subprocess.run(
        # options before -b, which adds BatchMode=yes (the first value given wins)
        ["sftp", *options, "-b", "-", f"{user}@127.0.0.1"],
        input=commands,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # no controlling tty: the prompt goes to askpass
    )


def scp(
    gw: RunningGateway, user: str, code: str, *args: str, legacy: bool = False
) -> subprocess.CompletedProcess[str]:
    options, env = client(gw, "scp", user, code)
    argv = ["scp", "-q", *(["-O"] if legacy else []), *options]
    argv += [f"{user}@127.0.0.1{a}" if a.startswith(":") else a for a in args]
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, start_new_session=True
    )


def prompts(gw: RunningGateway, user: str) -> list[str]:
    return askpass.asked(gw.root / f"askpass-{user}")


def failures(gw: RunningGateway, user: str) -> list[dict[str, Any]]:
    gw.call(gw.gateway.noise.flush())
    return [e for e in gw.recorder.of("auth.failure") if e.get("user_given") == user]


def logins(gw: RunningGateway, user: str) -> list[dict[str, Any]]:
    return [e for e in gw.recorder.of("session.start") if e.get("principal") == user]


# -- hostile cases first -------------------------------------------------------------------


def test_a_key_proven_for_one_user_never_completes_another_users_code(
    gw: RunningGateway, secrets: dict[str, str]
) -> None:
    """Alice's key, then keyboard-interactive as erin with erin's right code."""

    class Switcher(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            handlers = dict(type(conn)._packet_handlers)
            original = handlers[MSG_USERAUTH_FAILURE]

            def failure(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> Any:
                methods = packet.get_namelist()
                partial = packet.get_boolean()
                if partial:
                    self._username = "erin"  # asyncssh's client sends this name next
                return original(
                    self, pkttype, pktid, SSHPacket(NameList(methods) + Boolean(partial))
                )

            handlers[MSG_USERAUTH_FAILURE] = failure
            conn._packet_handlers = handlers

        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(self, *args: Any) -> list[str]:
            return [now_code(secrets["erin"])]

    async def attempt() -> str:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gw.port,
                username="alice",
                client_factory=Switcher,
                client_keys=[str(gw.keys["alice"])],
                known_hosts=str(gw.known_hosts),
                agent_path=None,
            ):
                return "logged in"
        except (asyncssh.DisconnectError, asyncssh.PermissionDenied) as exc:
            return type(exc).__name__

    assert gw.call(attempt()) == "PermissionDenied"
    assert not logins(gw, "erin") and not logins(gw, "alice")
    reasons = {e["reason"] for e in failures(gw, "erin")}
    assert reasons == {"keyboard-interactive for a user whose key was not proven"}
    # erin's code was not spent: she still logs in with it
    assert sftp(gw, "erin", now_code(secrets["erin"]), "ls /inbox\n").returncode == 0


def test_keyboard_interactive_alone_never_logs_in(
    gw: RunningGateway, secrets: dict[str, str]
) -> None:
    """No key at all, a right code, and a client that tries kbdint whatever is offered."""

    class CodeOnly(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            handlers = dict(type(conn)._packet_handlers)
            original = handlers[MSG_USERAUTH_FAILURE]

            def failure(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> Any:
                packet.get_namelist()
                partial = packet.get_boolean()
                offered = NameList([b"keyboard-interactive"])
                return original(self, pkttype, pktid, SSHPacket(offered + Boolean(partial)))

            handlers[MSG_USERAUTH_FAILURE] = failure
            conn._packet_handlers = handlers

        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(self, *args: Any) -> list[str]:
            return [now_code(secrets["gina"])]

    async def attempt() -> str:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gw.port,
                username="gina",
                client_factory=CodeOnly,
                client_keys=None,
                preferred_auth=["keyboard-interactive"],
                known_hosts=str(gw.known_hosts),
                agent_path=None,
            ):
                return "logged in"
        except (asyncssh.DisconnectError, asyncssh.PermissionDenied) as exc:
            return type(exc).__name__

    assert gw.call(attempt()) in ("PermissionDenied", "DisconnectError")
    assert not logins(gw, "gina")
    assert {e["auth_method"] for e in failures(gw, "gina")} == {"keyboard-interactive"}
    # and OpenSSH without the key is never even asked for a code
    options, env = client(gw, "sftp", "gina", now_code(secrets["gina"]))
    options[options.index("-i") + 1] = "/dev/null"
    result = subprocess.run(
        ["sftp", *options, "-b", "-", "gina@127.0.0.1"],
        input="ls /inbox\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert result.returncode != 0 and "Permission denied (publickey)" in result.stderr
    assert prompts(gw, "gina") == []


def test_wrong_codes_are_refused_and_count_toward_max_auth_tries(
    gw: RunningGateway, secrets: dict[str, str]
) -> None:
    right = {now_code(secrets["frank"], d) for d in (-1, 0, 1)}
    wrong = next(c for c in ("000000", "111111", "222222") if c not in right)
    result = sftp(gw, "frank", wrong, "ls /inbox\n")
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    assert len(prompts(gw, "frank")) == 1 and PROMPT.strip() in prompts(gw, "frank")[0]
    events = wait_for(lambda: failures(gw, "frank"))
    assert [e["reason"] for e in events] == ["wrong TOTP code"]
    assert events[0]["auth_method"] == "keyboard-interactive"
    assert wrong not in str(events)  # the code given is not journalled
    assert not logins(gw, "frank")

    # A client that keeps guessing is cut off at max_auth_tries (4 here).
    class Guesser(asyncssh.SSHClient):
        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(self, *args: Any) -> list[str]:
            return [wrong]

    async def guess() -> str:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gw.port,
                username="frank",
                client_factory=Guesser,
                client_keys=[str(gw.keys["frank"])],
                known_hosts=str(gw.known_hosts),
                agent_path=None,
            ):
                return "logged in"
        except (asyncssh.DisconnectError, asyncssh.PermissionDenied) as exc:
            return str(exc)

    assert "too many authentication failures" in gw.call(guess())
    total = sum(int(e.get("count", 1)) for e in failures(gw, "frank"))
    assert total == 1 + 4


def test_a_user_who_must_answer_without_a_secret_is_refused(gw: RunningGateway) -> None:
    result = sftp(gw, "bob", "123456", "ls /inbox\n")
    assert result.returncode != 0
    assert "none is enrolled" in result.stderr and "conduit user totp bob" in result.stderr
    assert prompts(gw, "bob") == []  # never asked for a code that cannot be checked
    events = wait_for(lambda: failures(gw, "bob"))
    assert [e["reason"] for e in events] == [
        "second factor required but no TOTP secret is enrolled"
    ]
    assert not logins(gw, "bob")


# -- the logins that work ------------------------------------------------------------------


def test_a_good_code_logs_in_over_sftp_and_cannot_be_used_again(
    gw: RunningGateway, secrets: dict[str, str], tmp_path: Path
) -> None:
    upload = random_file(tmp_path / "up.bin", 300_000)
    code = now_code(secrets["alice"])
    result = sftp(gw, "alice", code, f"put {upload} /inbox/up.bin\n")
    assert result.returncode == 0, result.stderr
    assert sha256(gw.area("inbox") / "up.bin") == sha256(upload)
    assert len(prompts(gw, "alice")) == 1
    start = wait_for(lambda: logins(gw, "alice"))[0]
    assert start["factors"] == ["publickey", "totp"] and start["auth_method"] == "publickey"
    assert (
        start["key_fingerprint"]
        == asyncssh.read_public_key(str(gw.keys["alice"]) + ".pub").get_fingerprint()
    )

    replay = scp(gw, "alice", code, ":/inbox/up.bin", str(tmp_path / "back.bin"), legacy=True)
    assert replay.returncode != 0
    assert not (tmp_path / "back.bin").exists()
    assert [e["reason"] for e in failures(gw, "alice")] == ["TOTP code already used"]
    assert len(logins(gw, "alice")) == 1


@pytest.mark.parametrize("legacy", [False, True], ids=["scp", "scp-O"])
def test_a_good_code_logs_in_over_scp(
    gw: RunningGateway, secrets: dict[str, str], tmp_path: Path, legacy: bool
) -> None:
    upload = random_file(tmp_path / "f.bin", 50_000)
    # one step each: the sftp-mode run spends the current step, scp -O the next
    code = now_code(secrets["dave"], 1 if legacy else 0)
    result = scp(gw, "dave", code, str(upload), f":/inbox/dave-{legacy}.bin", legacy=legacy)
    assert result.returncode == 0, result.stderr
    assert sha256(gw.area("inbox") / f"dave-{legacy}.bin") == sha256(upload)


def test_a_zone_without_totp_takes_the_key_alone(gw: RunningGateway) -> None:
    asked = len(prompts(gw, "alice"))
    result = sftp(gw, "alice", "000000", "ls /plantbox\n", source="127.0.0.2")
    assert result.returncode == 0, result.stderr
    assert len(prompts(gw, "alice")) == asked  # no code asked
    plant = wait_for(lambda: [e for e in logins(gw, "alice") if e["zone"] == "plant"])
    assert plant[0]["factors"] == ["publickey"]


def test_a_role_requires_totp_from_any_zone(gw: RunningGateway, secrets: dict[str, str]) -> None:
    assert sftp(gw, "carol", "000000", "ls /plantbox\n", source="127.0.0.2").returncode != 0
    good = sftp(gw, "carol", now_code(secrets["carol"]), "ls /plantbox\n", source="127.0.0.2")
    assert good.returncode == 0, good.stderr
    assert wait_for(lambda: logins(gw, "carol"))[0]["factors"] == ["publickey", "totp"]


def test_the_partial_success_answer(gw: RunningGateway, secrets: dict[str, str]) -> None:
    """After the key: FAILURE, partial success, keyboard-interactive alone."""
    seen: list[tuple[list[bytes], bool]] = []

    class Watcher(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            handlers = dict(type(conn)._packet_handlers)
            original = handlers[MSG_USERAUTH_FAILURE]

            def failure(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> Any:
                methods = packet.get_namelist()
                partial = packet.get_boolean()
                seen.append((list(methods), partial))
                return original(
                    self, pkttype, pktid, SSHPacket(NameList(methods) + Boolean(partial))
                )

            handlers[MSG_USERAUTH_FAILURE] = failure
            conn._packet_handlers = handlers

        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(
            self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
        ) -> list[str]:
            assert prompts == [(PROMPT, False)]  # not echoed
            return [now_code(secrets["gina"])]

    async def login() -> str:
        async with asyncssh.connect(
            "127.0.0.1",
            gw.port,
            username="gina",
            client_factory=Watcher,
            client_keys=[str(gw.keys["gina"])],
            known_hosts=str(gw.known_hosts),
            agent_path=None,
        ) as conn:
            result = await conn.run("true")  # no shell: refused, but logged in
            return str(result.exit_status)

    assert gw.call(login()) == "1"
    assert seen[0] == ([b"publickey"], False)  # the answer to "none"
    assert seen[-1] == ([b"keyboard-interactive"], True)


def test_secrets_that_cannot_be_read_refuse_the_login(
    make_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    """A key file others may read: no code can be trusted, so nobody who owes one logs in."""
    gw = make_gateway('\n[auth.second_factor]\ntotp_users = ["alice"]\n')
    data = gw.config.gateway.data_dir
    store = SecretStore.open(data)
    secret = store.enrol("alice")
    store.close()
    (data / KEY_FILE).chmod(0o644)
    env = askpass.answering(tmp_path / "ask", now_code(secret))
    options = askpass.options(gw.known_hosts, gw.keys["alice"])
    result = subprocess.run(
        ["sftp", "-P", str(gw.port), *options, "-b", "-", "alice@127.0.0.1"],
        input="ls /inbox\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert result.returncode != 0 and "cannot be checked" in result.stderr
    assert askpass.asked(tmp_path / "ask") == []
    gw.call(gw.gateway.noise.flush())
    (event,) = gw.recorder.of("auth.failure")
    assert (
        event["reason"].startswith("second factor unavailable:") and "chmod 600" in event["reason"]
    )
    assert secret not in str(event)
    assert not gw.recorder.of("session.start")
    # a user who owes no code is not affected
    upload = random_file(tmp_path / "b.bin", 1000)
    assert gw.sftp(f"put {upload} /inbox/b.bin\n", user="bob").returncode == 0


def test_a_reload_that_requires_totp_ends_key_only_sessions(
    make_gateway: Callable[..., RunningGateway],
) -> None:
    gw = make_gateway()
    source = gw.config.source
    assert source is not None
    source.write_text(policy_text(gw.root, gw.keys))

    async def scenario() -> list[dict[str, str]]:
        async with gw.connect() as conn:
            await conn.run("true")  # logged in with the key alone
            source.write_text(
                policy_text(gw.root, gw.keys, '\n[auth.second_factor]\ntotp_users = ["alice"]\n')
            )
            result = await gw.gateway.reload_policy()
            await asyncio.wait_for(conn.wait_closed(), 10)
            return list(result.revoked)

    revoked = gw.call(scenario())
    assert [r["principal"] for r in revoked] == ["alice"]
    assert revoked[0]["reason"] == "a second factor (TOTP) is now required"
    assert wait_for(lambda: gw.recorder.of("session.revoke"))
