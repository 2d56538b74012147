"""A running gateway in its own thread and real OpenSSH clients against it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conduit.config import Config

USER = "alice"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_key(folder: Path, name: str = "id_ed25519") -> Path:
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
    )
    return key


class MemoryRecorder:
    """Collects events in memory, for tests to look at."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> None:
        with self.lock:
            self.events.append({"type": type, "outcome": outcome, **fields})

    def of(self, type: str, outcome: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                e
                for e in self.events
                if e["type"] == type and (outcome is None or e["outcome"] == outcome)
            ]


@dataclass
class RunningGateway:
    config: Config
    port: int
    root: Path
    known_hosts: Path
    recorder: Any
    loop: asyncio.AbstractEventLoop
    gateway: Any
    thread: threading.Thread
    keys: dict[str, Path] = field(default_factory=dict)

    def area(self, name: str) -> Path:
        return self.config.areas[name].path

    def ssh_options(self, user: str = USER, key: Path | None = None) -> list[str]:
        key = key or self.keys[user]
        return [
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(key),
        ]

    def scp(
        self,
        *args: str,
        legacy: bool = False,
        user: str = USER,
        key: Path | None = None,
        timeout: float = 60,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run OpenSSH scp; ``:path`` in args means a path on the gateway."""
        argv = [
            "scp",
            "-q",
            *(["-O"] if legacy else []),
            "-P",
            str(self.port),
            *self.ssh_options(user, key),
            *extra,
        ]
        argv += [f"{user}@127.0.0.1{a}" if a.startswith(":") else a for a in args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def sftp(
        self,
        commands: str,
        user: str = USER,
        key: Path | None = None,
        timeout: float = 60,
        cwd: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run ``sftp -b -`` with ``commands``; each failing command fails the batch."""
        argv = [
            "sftp",
            "-b",
            "-",
            "-P",
            str(self.port),
            *self.ssh_options(user, key),
            *extra,
            f"{user}@127.0.0.1",
        ]
        return subprocess.run(
            argv, input=commands, capture_output=True, text=True, timeout=timeout, cwd=cwd
        )

    def ssh(
        self,
        *command: str,
        user: str = USER,
        key: Path | None = None,
        timeout: float = 30,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "ssh",
            "-p",
            str(self.port),
            *self.ssh_options(user, key),
            *extra,
            f"{user}@127.0.0.1",
            *command,
        ]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def connect(self, user: str = USER, **options: Any) -> Any:
        """An asyncssh client connection to the gateway (use with ``async with``)."""
        import asyncssh

        return asyncssh.connect(
            "127.0.0.1",
            self.port,
            username=user,
            client_keys=[str(self.keys[user])],
            known_hosts=str(self.known_hosts),
            agent_path=None,
            **options,
        )

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def policy_text(root: Path, keys: dict[str, Path], extra: str = "") -> str:
    def pub(name: str) -> str:
        return (keys[name].with_suffix(".pub")).read_text().strip()

    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[gateway.limits]
max_startups = 16
idle_timeout = 0

[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[areas.inbox]
zone = "local"
path = "{root}/areas/inbox"

[areas.outbox]
zone = "local"
path = "{root}/areas/outbox"

[areas.inbox-archive]
zone = "local"
path = "{root}/areas/inbox-archive"

[roles.engineer]
grants = [
  {{ target = "inbox", ops = ["list", "read", "write", "mkdir", "rename", "delete"] }},
  {{ target = "outbox", ops = ["list", "read"] }},
]

[roles.dropbox]
grants = [{{ target = "inbox", ops = ["write"] }}]

[users.alice]
keys = ["{pub("alice")}"]
roles = ["engineer"]

[users.bob]
keys = ["{pub("bob")}"]
roles = ["dropbox"]
{extra}
"""


def start_gateway(
    config: Config, keys: dict[str, Path], root: Path, recorder: Any = None, checks: Any = None
) -> RunningGateway:
    from conduit.gateway import Gateway

    # recorder="journal": the real audit journal the config names (no stand-in).
    recorder = None if recorder == "journal" else recorder or MemoryRecorder()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    gateway = Gateway(config, recorder=recorder, checks=checks)
    asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(30)
    ready.set()
    host_key = gateway.host_keys[0].export_public_key().decode().strip()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{gateway.port} {host_key}\n")
    return RunningGateway(
        config, gateway.port, root, known_hosts, gateway.recorder, loop, gateway, thread, keys
    )


def stop_gateway(running: RunningGateway) -> None:
    running.call(running.gateway.stop())
    running.loop.call_soon_threadsafe(running.loop.stop)
    running.thread.join(10)


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true, or ``timeout`` passes."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


SRC = Path(__file__).resolve().parents[2] / "src"


def conduit_env() -> dict[str, str]:
    """The environment for ``python -m conduit`` running this tree's code."""
    import os

    return {**os.environ, "PYTHONPATH": str(SRC)}


def serve_process(
    config: Path, stderr: Any = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int, Path]:
    """``conduit serve --config`` as its own process, once its banner is out.

    Returns the process, its port, and a known_hosts file (beside ``config``)
    pinning its host key. ``stderr`` receives its console (default: discarded);
    ``env`` adds variables the gateway's environment has.
    """
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "conduit", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**conduit_env(), **(env or {})},
    )
    assert process.stdout is not None
    port = 0
    for line in process.stdout:
        if line.startswith("Conduit gateway listening on"):
            port = int(line.rsplit(":", 1)[1])
        if line.strip().startswith("sftp -P"):
            break
    data = config.parent / "data"
    host_key = " ".join((data / "host_ed25519.pub").read_text().split()[:2])
    known = config.parent / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    return process, port, known


def _client_options(port: int, known: Path, key: Path) -> list[str]:
    return [
        "-P",
        str(port),
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(key),
    ]


def scp_argv(port: int, known: Path, key: Path, *args: str) -> list[str]:
    """OpenSSH scp against a gateway on ``port`` (options first, then ``args``)."""
    return ["scp", "-q", *_client_options(port, known, key), *args]


def sftp_argv(port: int, known: Path, key: Path, user: str = USER) -> list[str]:
    """OpenSSH sftp in batch mode (commands on stdin) against a gateway on ``port``."""
    return ["sftp", "-b", "-", *_client_options(port, known, key), f"{user}@127.0.0.1"]


def run_sampling(
    argvs: list[list[str]], sample: Callable[[], int], every: float = 0.002, timeout: float = 60
) -> list[int]:
    """Run these clients at once, each to success, while a thread records
    ``sample()`` every ``every`` seconds; the samples (e.g. bytes held in a
    shared bound, to show it was used and never exceeded)."""
    samples: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every):
            samples.append(sample())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    clients = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for argv in argvs
    ]
    try:
        for client in clients:
            _, err = client.communicate(timeout=timeout)
            assert client.returncode == 0, err
    finally:
        done.set()
        watcher.join(5)
        for client in clients:
            client.kill()
    return samples
