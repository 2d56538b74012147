"""Real OpenSSH ``sshd`` instances on loopback, standing in for OT devices.

Reusable by tests and benchmarks: :func:`start_sshd` writes a private config
(own host key, own AuthorizedKeysFile, ephemeral loopback port, ``-D -e``) and
returns a :class:`Sshd` whose ``host_key`` is the line to pin. ``sftp=False``
gives a legacy-SCP-only device (no ``Subsystem`` line at all).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, comment: str = "conduit-test") -> str:
    """Create an ed25519 key pair at ``path``; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found.append(child)
        found.extend(_descendants(child))
    return found


@dataclass
class Sshd:
    process: subprocess.Popen[bytes]
    port: int
    host_key: str
    """The ``ssh-ed25519 AAAA...`` line to pin (no comment)."""
    workdir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """Kill the daemon and every session process it forked (a dead device)."""
        pids = [self.process.pid, *_descendants(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=5)

    def kill_sessions(self) -> None:
        """Kill only the per-connection processes: the link drops, the daemon stays."""
        for pid in _descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


BIND_TRIES = 5
"""Ports tried: the port :func:`free_port` found can be taken before sshd binds it
(an outgoing connection's ephemeral port, another test's server)."""


def _listening(workdir: Path, config: Path, port: int) -> subprocess.Popen[bytes] | None:
    """sshd started with ``config`` once it listens on ``port``; None if another
    process took the port first (then try another)."""
    pidfile = workdir / "sshd.pid"
    pidfile.unlink(missing_ok=True)
    log = (workdir / "sshd.log").open("wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log, stdout=log)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            said = (workdir / "sshd.log").read_text()
            if "Address already in use" in said:
                return None
            raise RuntimeError(f"sshd exited: {said}")
        try:
            # sshd writes its pid file once it listens: whatever answers the
            # port before that may be another process that took it
            if pidfile.read_text().strip() != str(process.pid):
                raise OSError("not listening yet")
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("sshd did not start listening") from None
            time.sleep(0.02)


def start_sshd(
    workdir: Path, *, client_keys: list[str], sftp: bool, extra: tuple[str, ...] = ()
) -> Sshd:
    """Start an sshd for root logins with ``client_keys`` on 127.0.0.1; ``extra``
    lines are added to its config (e.g. a legacy device's only algorithms)."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "host_ed25519"
    host_pub = keygen(host_key, "device-host")
    authorized = workdir / "authorized_keys"
    authorized.write_text("".join(f"{key}\n" for key in client_keys))
    if os.geteuid() == 0:
        # sshd run as root insists on its privilege separation folder, which
        # only the package's service unit creates; a fresh container has none.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for _ in range(BIND_TRIES):
        port = free_port()
        lines = [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "MaxSessions 30",
            "MaxStartups 100",
            "LogLevel ERROR",
        ]
        if sftp:
            lines.append("Subsystem sftp internal-sftp")
        lines.extend(extra)
        config = workdir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        process = _listening(workdir, config, port)
        if process is not None:
            break
    else:
        raise RuntimeError(f"sshd found no free port in {BIND_TRIES} tries")
    pinned = " ".join(host_pub.split()[:2])
    return Sshd(process, port, pinned, workdir)
