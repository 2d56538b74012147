"""The command line as a new user meets it: embedded default, init, errors without tracebacks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.cli.main import COMMANDS, main
from tests.support.gateway import make_key, random_file, sha256

SRC = str(Path(__file__).resolve().parents[2] / "src")


def env_for(home: Path) -> dict[str, str]:
    """The test tree's own code (not whatever is installed), with ``home`` as HOME."""
    return {**os.environ, "HOME": str(home), "PYTHONPATH": SRC}


def conduit(
    *args: str, cwd: Path, home: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_for(home),
    )


class Served:
    def __init__(self, process: subprocess.Popen[str], banner: list[str]) -> None:
        self.process = process
        self.banner = banner

    def command(self, prefix: str) -> list[str]:
        line = next(line.strip() for line in self.banner if line.strip().startswith(prefix))
        return line.split()


def serve(*args: str, cwd: Path, home: Path) -> Served:
    process = subprocess.Popen(
        [sys.executable, "-m", "conduit", "serve", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(home),
    )
    banner: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        banner.append(line)
        if line.strip().startswith("conduit audit tail"):
            return Served(process, banner)
    raise AssertionError(f"no banner: {banner} {process.stderr.read() if process.stderr else ''}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    make_key(home / ".ssh", "id_ed25519")
    return home


@pytest.fixture
def running(tmp_path: Path, home: Path) -> Iterator[tuple[Served, Path]]:
    folder = tmp_path / "empty"
    folder.mkdir()
    served = serve("--listen", "127.0.0.1:0", cwd=folder, home=home)
    yield served, folder
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(15) == 0


def client_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home)}


def pinned(home: Path) -> list[str]:
    # OpenSSH finds ~/.ssh through the password database, not $HOME: name the
    # test home's key and known_hosts explicitly.
    return [
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={home}/known_hosts",
        "-i",
        f"{home}/.ssh/id_ed25519",
    ]


def test_embedded_default_prints_commands_that_work(
    running: tuple[Served, Path], home: Path, tmp_path: Path
) -> None:
    served, folder = running
    text = "".join(served.banner)
    assert "host key SHA256:" in text
    src = random_file(tmp_path / "hello.bin", 100_000)
    for prefix in ("scp -P", "scp -O"):
        argv = served.command(prefix)
        argv = [argv[0], *pinned(home), *argv[1:]]
        argv[argv.index("FILE")] = str(src)
        result = subprocess.run(
            argv, capture_output=True, text=True, env=client_env(home), timeout=30
        )
        assert result.returncode == 0, result.stderr
        assert sha256(folder / "data" / "areas" / "inbox" / "hello.bin") == sha256(src)
        (folder / "data" / "areas" / "inbox" / "hello.bin").unlink()
    sftp = served.command("sftp -P")
    result = subprocess.run(
        ["sftp", "-b", "-", *pinned(home), *sftp[1:]],
        input="ls /\n",
        capture_output=True,
        text=True,
        env=client_env(home),
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "/inbox" in result.stdout and "/outbox" in result.stdout
    # The printed way to watch events finds this gateway's journal (-n: not -f).
    tail = served.command("conduit audit tail")
    assert "-f" in tail
    tail[tail.index("-f")] = "-n50"
    result = subprocess.run(
        [sys.executable, "-m", *tail],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env_for(home),
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "file.upload" in result.stdout and "/inbox/hello.bin" in result.stdout
    # The printed fingerprint is the persistent key in the data folder.
    shown = re.search(r"SHA256:\S+", text)
    assert shown is not None
    keygen = subprocess.run(
        ["ssh-keygen", "-lf", str(folder / "data" / "host_ed25519.pub")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.group(0) in keygen.stdout


def test_outbox_is_read_only_in_the_default(
    running: tuple[Served, Path], home: Path, tmp_path: Path
) -> None:
    served, folder = running
    argv = served.command("scp -P")
    src = random_file(tmp_path / "x.bin", 10)
    argv = [argv[0], *pinned(home), *argv[1:]]
    argv[argv.index("FILE")] = str(src)
    argv[-1] = argv[-1].replace("/inbox/", "/outbox/")
    result = subprocess.run(argv, capture_output=True, text=True, env=client_env(home), timeout=30)
    assert result.returncode != 0
    assert os.listdir(folder / "data" / "areas" / "outbox") == []


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "-v"])
def test_console_shows_sessions_and_refusals_and_file_events_with_v(
    tmp_path: Path, home: Path, verbose: bool
) -> None:
    folder = tmp_path / "console"
    folder.mkdir()
    served = serve("--listen", "127.0.0.1:0", *(["-v"] if verbose else []), cwd=folder, home=home)
    try:
        argv = served.command("scp -P")
        argv = [argv[0], *pinned(home), *argv[1:]]
        argv[argv.index("FILE")] = str(random_file(tmp_path / "x.bin", 10))
        run = dict(capture_output=True, text=True, env=client_env(home), timeout=30)
        assert subprocess.run(argv, **run).returncode == 0  # type: ignore[call-overload]
        argv[-1] = argv[-1].replace("/inbox/", "/outbox/")
        assert subprocess.run(argv, **run).returncode != 0  # type: ignore[call-overload]
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(15) == 0
    assert served.process.stderr is not None
    console = served.process.stderr.read()
    assert "session.start success" in console and "access.denied denied" in console
    assert ("file.upload success" in console) is verbose


def test_host_key_persists_across_restarts(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "again"
    folder.mkdir()
    prints = []
    for _ in range(2):
        served = serve("--listen", "127.0.0.1:0", cwd=folder, home=home)
        prints.append(next(line for line in served.banner if "host key" in line))
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(15)
    assert prints[0] == prints[1]


def test_default_listen_address() -> None:
    from conduit.cli.serve import choose_config

    assert choose_config.__defaults__ is None  # both arguments are explicit
    from conduit.config import embedded

    assert embedded(Path("/tmp/x"), keys=[]).gateway.listen == "127.0.0.1:2222"


def test_no_key_says_how_to_make_one(tmp_path: Path) -> None:
    home = tmp_path / "keyless"
    home.mkdir()
    folder = tmp_path / "empty"
    folder.mkdir()
    result = conduit("serve", cwd=folder, home=home)
    assert result.returncode == 1
    assert "ssh-keygen -t ed25519" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (folder / "data").exists()


def test_init_then_serve(tmp_path: Path, home: Path) -> None:
    target = tmp_path / "site"
    result = conduit("init", str(target), cwd=tmp_path, home=home)
    assert result.returncode == 0, result.stderr
    text = (target / "conduit.toml").read_text()
    assert "[zones." in text and "[[conduits]]" in text and "# " in text
    assert (home / ".ssh" / "id_ed25519.pub").read_text().split()[1] in text
    assert (target / "data" / "host_ed25519").exists()
    again = conduit("init", str(target), cwd=tmp_path, home=home)
    assert again.returncode == 1 and "already exists" in again.stderr
    served = serve(
        "--config", str(target / "conduit.toml"), "--listen", "127.0.0.1:0", cwd=tmp_path, home=home
    )
    try:
        assert "conduit.toml" in "".join(served.banner)
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(15) == 0


def site(tmp_path: Path, home: Path) -> Path:
    result = conduit("init", str(tmp_path / "site"), cwd=tmp_path, home=home)
    assert result.returncode == 0, result.stderr
    return tmp_path / "site" / "conduit.toml"


def journal_lines(config: Path) -> list[str]:
    files = sorted(config.parent.glob("data/audit/*.jsonl"))
    return "".join(p.read_text() for p in files).splitlines()


def test_port_in_use_is_one_clear_line_and_journalled(tmp_path: Path, home: Path) -> None:
    config = site(tmp_path, home)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        # The journal and its sinks are up before the port: all must wind down.
        result = conduit(
            "serve", "--config", str(config), "--listen", listen, cwd=tmp_path, home=home
        )
    assert result.returncode == 1
    assert f"conduit: cannot listen on {listen}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    failed = [json.loads(line) for line in journal_lines(config) if "gateway.start" in line]
    assert failed[-1]["outcome"] == "failed" and "Address already in use" in failed[-1]["error"]
    verify = conduit("audit", "verify", "--config", str(config), cwd=tmp_path, home=home)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_second_gateway_on_the_same_journal_is_refused(tmp_path: Path, home: Path) -> None:
    config = site(tmp_path, home)
    args = ("--config", str(config), "--listen", "127.0.0.1:0")
    first = serve(*args, cwd=tmp_path, home=home)
    try:
        second = conduit("serve", *args, cwd=tmp_path, home=home)
        assert second.returncode == 1
        journal = config.parent / "data" / "audit"
        assert f"conduit: audit journal {journal} is in use by process {first.process.pid}" in (
            second.stderr
        )
        assert "Traceback" not in second.stderr
    finally:
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(15) == 0
    # The refused start wrote nothing: one chain, sealed by the first gateway.
    verify = conduit("audit", "verify", "--config", str(config), cwd=tmp_path, home=home)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    starts = [line for line in journal_lines(config) if '"gateway.start"' in line]
    assert len(starts) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[gateway\n", "not valid TOML"),
        ("[gateway]\nlisten = 'nowhere'\n", "gateway.listen"),
        ("[gateway]\nlisen = '127.0.0.1:1'\n", "unknown key"),
        ("[users.x]\nkeys = ['not a key']\n", "not an OpenSSH public key"),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path, home: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(content)
    result = conduit("serve", "--config", str(bad), cwd=tmp_path, home=home)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert str(bad) in result.stderr


def test_missing_config_file(tmp_path: Path, home: Path) -> None:
    result = conduit("serve", "--config", "nope.toml", cwd=tmp_path, home=home)
    assert result.returncode == 1 and "conduit init" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: conduit" in capsys.readouterr().out


def _program(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "conduit"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return program


def test_banner_names_conduit_by_a_path_a_shell_can_run(tmp_path: Path) -> None:
    """./scripts/serve runs .venv/bin/conduit, which is on nobody's PATH: the banner's
    `audit tail` line must name it so that it can be pasted into a shell."""
    from conduit.cli.serve import conduit_command

    venv = _program(tmp_path / "my venv" / "bin")
    other = _program(tmp_path / "elsewhere")
    assert conduit_command(str(venv), path=str(tmp_path / "nowhere")) == f"'{venv}'"
    assert conduit_command(str(venv), path=str(other.parent)) == f"'{venv}'"  # another one
    assert conduit_command(str(venv), path=f"{venv.parent}:{other.parent}") == "conduit"
    assert conduit_command("/usr/lib/python3/conduit/__main__.py", path="") == "conduit"
