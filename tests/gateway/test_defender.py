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
import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from tests.gateway.test_reload_live import conduit, of
from tests.support.gateway import policy_text, random_file, scp_argv, serve_process, sha256

FLOOD, HONEST, ALLOWED = "127.0.0.2", "127.0.0.3", "127.0.0.4"
THRESHOLD = 4
#: Connections the flood may make at most (the ban must come long before).
MAX_FLOOD = 20


@dataclass
class Served:
    root: Path
    config: Path
    process: subprocess.Popen[str]
    port: int
    known: Path

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
def served(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("defended")
    config = root / "conduit.toml"
    text = policy_text(root, keys) + (
        f'\n[audit]\njournal = "{root}/audit"\n'
        f'\n[auth.defender]\nthreshold = {THRESHOLD}\nban_time = "1h"\nallow = ["{ALLOWED}/32"]\n'
    )
    text = text.replace(
        "[gateway.limits]\n", "[gateway.limits]\nauth_failure_summary_interval = 1\n"
    )
    config.write_text(text)
    process, port, known = serve_process(config)
    served = Served(root, config, process, port, known)
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
    listed = conduit("defender", "list", "--json", "--config", str(served.config))
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["source"] == FLOOD and row["banned"] is True and row["bans"] == 1


def test_an_allowed_address_is_never_banned(served: Served, keys: dict[str, Path]) -> None:
    outcomes = flood(served, ALLOWED, keys["mallory"], THRESHOLD * 3, until_refused=True)
    assert outcomes == ["failed"] * (THRESHOLD * 3)
    assert flood(served, ALLOWED, keys["alice"], 1, until_refused=False) == ["ok"]
    assert not [b for b in of(served.root, "defender.ban") if b["source"] == ALLOWED]


def test_refusals_of_a_banned_source_are_summarised(served: Served, keys: dict[str, Path]) -> None:
    before = len(of(served.root, "connection.refused"))
    assert flood(served, FLOOD, keys["alice"], 30, until_refused=False) == ["refused"] * 30
    conduit("defender", "list", "--config", str(served.config))  # a second for the summary
    records = of(served.root, "connection.refused")[before:]
    banned = [r for r in records if r["reason"] == "source banned by the defender"]
    assert sum(int(r.get("count", 1)) for r in banned) <= 30
    assert len(banned) <= 3  # the first, then summaries: not one record per knock


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
    again = conduit("defender", "unban", FLOOD, "--config", str(served.config))
    assert again.returncode == 1 and again.stderr.strip() == f"conduit: {FLOOD} is not banned"
    served.restart()  # a clean stop keeps nothing banned that was lifted
    assert flood(served, FLOOD, keys["alice"], 1, until_refused=False) == ["ok"]
    verify = conduit("audit", "verify", "--config", str(served.config))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _user() -> str:
    import getpass

    return getpass.getuser()


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
