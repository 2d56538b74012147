"""The defender against a real ``conduit serve``: a flood of failed logins from
one loopback address is banned at accept while another address still logs in
and transfers; the ban survives a crash and restart; ``conduit defender
unban`` lifts it (journalled); an allowed address is never banned.

Loopback has all of 127/8: the flood comes from 127.0.0.2, the honest user
from 127.0.0.3, the allow-listed address is 127.0.0.4 (clients bind to them:
asyncssh ``local_addr``, OpenSSH ``-o BindAddress``).
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from conduit.cli.main import main
from conduit.config import parse
from tests.audit.syslog_listener import Listener
from tests.gateway.test_reload_live import of
from tests.support.gateway import (
    RunningGateway,
    policy_text,
    random_file,
    scp_argv,
    serve_process,
    sha256,
    start_gateway,
    stop_gateway,
    wait_for,
)

FLOOD, HONEST, ALLOWED = "127.0.0.2", "127.0.0.3", "127.0.0.4"
THRESHOLD = 4
#: Connections the flood may make at most (the ban must come long before).
MAX_FLOOD = 20


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def conduit(*args: str) -> Ran:
    """The command line, in this process (the gateway it talks to is another)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # --help
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


@dataclass
class Served:
    root: Path
    config: Path
    process: subprocess.Popen[str]
    port: int
    known: Path
    siem: Listener

    def siem_saw(self, text: str) -> bool:
        return any(text.encode() in m for m in list(self.siem.messages))

    def scp(self, key: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = scp_argv(self.port, self.known, key, "-o", f"BindAddress={source}", *args)
        argv = [a.replace("GW:", "alice@127.0.0.1:") for a in argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        self.process.wait(30)
        self.process, self.port, self.known = serve_process(self.config)


async def attempt(port: int, known: Path, source: str, key: Path) -> str:
    """One login from ``source``: ``ok``, ``failed`` (key refused) or ``refused``
    (closed before the SSH handshake: what a banned source gets)."""
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            local_addr=(source, 0),
            username="alice",
            client_keys=[str(key)],
            known_hosts=str(known),
            agent_path=None,
            login_timeout=20,
        ):
            return "ok"
    except asyncssh.PermissionDenied:
        return "failed"
    except (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError):
        return "refused"


def flood(served: Served, source: str, key: Path, count: int, *, until_refused: bool) -> list[str]:
    async def run() -> list[str]:
        outcomes: list[str] = []
        for _ in range(count):
            outcomes.append(await attempt(served.port, served.known, source, key))
            if until_refused and outcomes[-1] == "refused":
                break
        return outcomes

    return asyncio.run(asyncio.wait_for(run(), 120))


@pytest.fixture(scope="module")
def siem() -> Iterator[Listener]:
    """A real TCP syslog receiver on loopback, on its own event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    listener = asyncio.run_coroutine_threadsafe(Listener("tcp").start(), loop).result(10)
    yield listener
    asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path], siem: Listener
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("defended")
    config = root / "conduit.toml"
    text = policy_text(root, keys) + (
        f'\n[audit]\njournal = "{root}/audit"\n'
        f'[[audit.siem]]\ntarget = "{siem.target}"\nformat = "rfc5424"\n'
        # a long half-life: a slow machine must not decay the flood's points below the threshold
        f'\n[auth.defender]\nthreshold = {THRESHOLD}\nban_time = "1h"\nhalf_life = "1h"\n'
        f'allow = ["{ALLOWED}/32"]\n'
    )
    text = text.replace(
        "[gateway.limits]\n", "[gateway.limits]\nauth_failure_summary_interval = 1\n"
    )
    config.write_text(text)
    process, port, known = serve_process(config)
    served = Served(root, config, process, port, known, siem)
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.process.terminate()
            served.process.wait(15)


def test_a_flood_is_banned_while_another_address_logs_in(
    served: Served, keys: dict[str, Path], tmp_path: Path
) -> None:
    outcomes = flood(served, FLOOD, keys["mallory"], MAX_FLOOD, until_refused=True)
    # the ban comes with the THRESHOLD-th connection's end; the next one may
    # already have been accepted by then (the client reconnects at once)
    assert outcomes[-1] == "refused"
    assert outcomes[:-1] in (["failed"] * THRESHOLD, ["failed"] * (THRESHOLD + 1))
    # the right key does not help from a banned source: bans are per source
    assert flood(served, FLOOD, keys["alice"], 1, until_refused=False) == ["refused"]
    src = random_file(tmp_path / "fw.bin", 300_000)
    done = served.scp(keys["alice"], HONEST, str(src), "GW:/inbox/fw.bin")
    assert done.returncode == 0, done.stderr
    assert sha256(served.root / "areas/inbox/fw.bin") == sha256(src)
    refused = served.scp(keys["alice"], FLOOD, str(src), "GW:/inbox/other.bin")
    assert refused.returncode != 0 and not (served.root / "areas/inbox/other.bin").exists()
    (ban,) = of(served.root, "defender.ban")
    assert ban["source"] == FLOOD and ban["outcome"] == "denied"
    # points decay a little between connections: the threshold-th may fall just short
    assert ban["reason"] in (f"auth_failed={THRESHOLD}", f"auth_failed={THRESHOLD + 1}")
    assert ban["bans"] == 1
    assert ban["duration"] == 3600 and ban["until"].endswith("Z")
    # one wrong key from the honest address: scored, far from a ban, and shown
    # live by the running gateway (below the threshold it is not in the table)
    assert flood(served, HONEST, keys["mallory"], 1, until_refused=False) == ["failed"]
    listed = conduit("defender", "list", "--json", "--config", str(served.config))
    assert listed.returncode == 0, listed.stderr
    rows = {r["source"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {FLOOD, HONEST}
    assert rows[FLOOD]["banned"] is True and rows[FLOOD]["bans"] == 1
    assert rows[HONEST]["banned"] is False and 0.9 < rows[HONEST]["score"] <= 1
    assert rows[HONEST]["reasons"] == {"auth_failed": 1}
    assert wait_for(lambda: served.siem_saw('"type":"defender.ban"'), timeout=15)


def test_an_allowed_address_is_never_banned(served: Served, keys: dict[str, Path]) -> None:
    outcomes = flood(served, ALLOWED, keys["mallory"], THRESHOLD * 3, until_refused=True)
    assert outcomes == ["failed"] * (THRESHOLD * 3)
    assert flood(served, ALLOWED, keys["alice"], 1, until_refused=False) == ["ok"]
    assert not [b for b in of(served.root, "defender.ban") if b["source"] == ALLOWED]


def test_refusals_of_a_banned_source_are_summarised(served: Served, keys: dict[str, Path]) -> None:
    # an address of its own: no other test's knocks can land in its summaries
    source = "127.0.0.8"
    started = time.monotonic()
    assert flood(served, source, keys["mallory"], MAX_FLOOD, until_refused=True)[-1] == "refused"
    assert flood(served, source, keys["alice"], 30, until_refused=False) == ["refused"] * 30
    intervals = int(time.monotonic() - started) + 2  # auth_failure_summary_interval = 1

    def banned() -> list[dict[str, object]]:
        return [
            r
            for r in of(served.root, "connection.refused")
            if r["source"] == source and r["reason"] == "source banned by the defender"
        ]

    # every knock counted, 1 + 30 (the last summary comes at the end of its interval) ...
    assert wait_for(lambda: sum(int(str(r.get("count", 1))) for r in banned()) == 31, timeout=15)
    # ... in a few records: the first per interval, then one summary each
    assert len(banned()) <= 2 * intervals < 31


def test_the_ban_survives_a_crash_and_unban_lifts_it(served: Served, keys: dict[str, Path]) -> None:
    served.restart(signal.SIGKILL)  # the ban was on disk before the source was refused
    assert flood(served, FLOOD, keys["alice"], 1, until_refused=False) == ["refused"]
    table = conduit("defender", "list", "--config", str(served.config))
    assert table.returncode == 0 and FLOOD in table.stdout and "auth_failed=" in table.stdout
    unban = conduit("defender", "unban", FLOOD, "--config", str(served.config))
    assert unban.returncode == 0, unban.stderr
    assert "applied" in unban.stdout
    assert flood(served, FLOOD, keys["alice"], 1, until_refused=False) == ["ok"]
    (record,) = of(served.root, "defender.unban")
    assert record["source"] == FLOOD and record["by"] == f"cli:{_user()}"
    assert wait_for(lambda: served.siem_saw('"type":"defender.unban"'), timeout=15)
    again = conduit("defender", "unban", FLOOD, "--config", str(served.config))
    assert again.returncode == 1 and again.stderr.strip() == f"conduit: {FLOOD} is not banned"
    served.restart()  # a clean stop keeps nothing banned that was lifted
    assert flood(served, FLOOD, keys["alice"], 1, until_refused=False) == ["ok"]
    verify = conduit("audit", "verify", "--config", str(served.config))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _user() -> str:
    import getpass

    return getpass.getuser()


def test_a_reload_that_allows_a_banned_address_lifts_its_ban(
    served: Served, keys: dict[str, Path]
) -> None:
    source = "127.0.0.9"
    assert flood(served, source, keys["mallory"], MAX_FLOOD, until_refused=True)[-1] == "refused"
    text = served.config.read_text()
    served.config.write_text(
        text.replace(f'allow = ["{ALLOWED}/32"]', f'allow = ["{ALLOWED}/32", "{source}/32"]')
    )
    try:
        reloaded = conduit("reload", "--config", str(served.config))
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        lifted = [r for r in of(served.root, "defender.unban") if r["source"] == source]
        assert [r["by"] for r in lifted] == ["allow-list"]
        assert flood(served, source, keys["alice"], 1, until_refused=False) == ["ok"]
    finally:
        served.config.write_text(text)
        assert conduit("reload", "--config", str(served.config)).returncode == 0


@pytest.mark.parametrize("bad", ["bob", "127.0.0.0/8", "\x1b[2J"])
def test_unban_refuses_what_is_not_an_address(served: Served, bad: str) -> None:
    result = conduit("defender", "unban", bad, "--config", str(served.config))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not an IP address" in result.stderr
    assert "\x1b" not in result.stderr


def test_help_for_each_action() -> None:
    for action in ("list", "unban"):
        result = conduit("defender", action, "--help")
        assert result.returncode == 0 and "--config" in result.stdout


# -- offences other than failed keys, on an in-process gateway -----------------------------


@pytest.fixture
def quick(tmp_path: Path, keys: dict[str, Path]) -> Iterator[RunningGateway]:
    """Bans after two grace expiries or protocol errors (2 points each); a one-second grace time."""
    text = policy_text(
        tmp_path, keys, '\n[auth.defender]\nthreshold = 4\nban_time = "1h"\nhalf_life = "1h"\n'
    )
    text = text.replace("[gateway.limits]\n", "[gateway.limits]\nlogin_grace_time = 1\n")
    running = start_gateway(parse(text, source=tmp_path / "conduit.toml"), keys, tmp_path)
    yield running
    stop_gateway(running)


def knock(port: int, source: str, send: bytes, wait: float) -> bytes:
    """Connect from ``source``, send ``send``, read until closed (or ``wait`` s)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=wait, source_address=(source, 0)
    ) as s:
        s.sendall(send)
        got = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
        return got


def test_grace_expiry_and_protocol_errors_ban_too(quick: RunningGateway) -> None:
    # two handshakes left idle until login_grace_time closes them
    for _ in range(2):
        assert knock(quick.port, "127.0.0.5", b"SSH-2.0-idle\r\n", 10).startswith(b"SSH-2.0-")
    assert wait_for(lambda: quick.recorder.of("defender.ban"), timeout=10)
    assert knock(quick.port, "127.0.0.5", b"", 5) == b""  # banned: not even a banner
    # a packet that breaks the protocol, twice
    garbage = b"SSH-2.0-garbage\r\n" + b"\xff" * 64
    for _ in range(2):
        knock(quick.port, "127.0.0.6", garbage, 10)
    assert wait_for(lambda: len(quick.recorder.of("defender.ban")) == 2, timeout=10)
    grace, protocol = quick.recorder.of("defender.ban")
    assert (grace["source"], grace["reason"]) == ("127.0.0.5", "grace_expired=2")
    assert (protocol["source"], protocol["reason"]) == ("127.0.0.6", "protocol_error=2")
    assert knock(quick.port, "127.0.0.6", b"", 5) == b""
    # another address is untouched
    assert knock(quick.port, "127.0.0.7", b"", 2).startswith(b"SSH-2.0-")


def test_an_unusable_state_file_fails_the_start_in_one_line(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    text = policy_text(tmp_path, keys, "\n[auth.defender]\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "state.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(OSError, match=r"state .*state\.sqlite is unusable") as info:
        start_gateway(parse(text, source=tmp_path / "conduit.toml"), keys, tmp_path)
    assert "\n" not in str(info.value)
