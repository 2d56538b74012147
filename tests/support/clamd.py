"""A real clamd (Debian's clamav-daemon) with a signature database the tests write.

No freshclam, no network: the database is two lines of ClamAV's extended
signature format (``.ndb``), one for the EICAR test string and one for a
marker only these tests use. clamd runs in the foreground as a child of the
test process, with its own config, socket and log in a temp folder; it is up
in well under a second with so small a database.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"CONDUIT-TEST-MALWARE"  # matched by the custom signature below
STREAM_MAX = 512 * 1024 * 1024  # covers the 256 MiB bench file


@dataclass
class Clamd:
    process: subprocess.Popen[bytes]
    socket: Path
    folder: Path
    started_in: float  # seconds from exec to a listening socket

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def alive(self) -> bool:
        return self.process.poll() is None


def available() -> bool:
    return os.path.exists(CLAMD)


def start_clamd(folder: Path, *, stream_max: int = STREAM_MAX) -> Clamd:
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "db"
    database.mkdir(exist_ok=True)
    (database / "conduit-test.ndb").write_text(
        f"Conduit.Test.Eicar:0:*:{EICAR.hex()}\nConduit.Test.Marker:0:*:{MARKER.hex()}\n"
    )
    sock = folder / "clamd.sock"
    config = folder / "clamd.conf"
    config.write_text(
        "\n".join(
            [
                f"LocalSocket {sock}",
                "Foreground yes",
                f"DatabaseDirectory {database}",
                f"TemporaryDirectory {folder}",
                f"LogFile {folder / 'clamd.log'}",
                f"StreamMaxLength {stream_max}",
                f"MaxScanSize {stream_max}",
                f"MaxFileSize {stream_max}",
                "SelfCheck 0",
                "",
            ]
        )
    )
    began = time.monotonic()
    process = subprocess.Popen(
        [CLAMD, "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = began + 30
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_clamd_process(process)
            log = folder / "clamd.log"
            raise RuntimeError(f"clamd did not start: {log.read_text() if log.exists() else ''}")
        time.sleep(0.02)
    return Clamd(process, sock, folder, time.monotonic() - began)


def stop_clamd_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def stop_clamd(clamd: Clamd) -> None:
    stop_clamd_process(clamd.process)
