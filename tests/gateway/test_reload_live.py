"""``conduit reload`` against a real ``conduit serve`` process: it says what the
gateway did, the journal says it too, and what the new policy removes stops now."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conduit.gateway.control import ask
from tests.support.gateway import (
    conduit_env,
    policy_text,
    random_file,
    scp_argv,
    serve_process,
    wait_for,
)

WRITE_GRANT = '"list", "read", "write", "mkdir", "rename", "delete"'


def journal(root: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((root / "audit").glob("journal-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def of(root: Path, type_: str, outcome: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in journal(root)
        if r["type"] == type_ and (outcome is None or r["outcome"] == outcome)
    ]


def conduit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env=conduit_env(),
        timeout=timeout,
    )


@dataclass
class Served:
    root: Path
    config: Path
    text: str
    process: subprocess.Popen[str]
    port: int
    known: Path
    console: Path

    def reload(self, text: str | None = None) -> subprocess.CompletedProcess[str]:
        if text is not None:
            self.config.write_text(text)
        return conduit("reload", "--config", str(self.config))

    def scp(self, key: Path, *args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
        argv = scp_argv(self.port, self.known, key, *args)
        argv = [a.replace("GW:", f"{user}@127.0.0.1:") for a in argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(keys: dict[str, Path], tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "site"
    root.mkdir()
    config = root / "conduit.toml"
    text = policy_text(root, keys) + f'\n[audit]\njournal = "{root}/audit"\n'
    config.write_text(text)
    console = tmp_path / "console.txt"
    with console.open("w") as err:
        process, port, known = serve_process(config, stderr=err)
    try:
        yield Served(root, config, text, process, port, known, console)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(15)


def test_reload_reports_what_the_gateway_did(served: Served, keys: dict[str, Path]) -> None:
    root, text = served.root, served.text
    src = random_file(root.parent / "a.bin", 1000)
    sock = root / "data" / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600

    # 1. A good file: applied, and the answer comes after it was.
    good = served.reload(text.replace(WRITE_GRANT, '"list", "read"'))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "reloaded; the new policy is in force" in good.stdout
    refused = served.scp(keys["alice"], "-O", str(src), "GW:/inbox/x.bin")
    assert refused.returncode != 0  # at once: no waiting for a signal to land

    # 2. A file `check` passes but the gateway cannot serve (an area folder
    # below a regular file): refused by the gateway, with its reason.
    (root / "afile").write_text("not a folder")
    unusable = text.replace(f"{root}/areas/outbox", f"{root}/afile/outbox")
    bad = served.reload(unusable)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "NOT reloaded by the gateway" in bad.stdout and "Not a directory" in bad.stdout
    assert "keeps its current policy" in bad.stdout
    # The policy of step 1 is still in force (writes refused).
    assert served.scp(keys["alice"], "-O", str(src), "GW:/inbox/y.bin").returncode != 0

    # 3. A file that fails the check: the gateway is not even asked.
    before = len(of(root, "policy.reload"))
    broken = served.reload("[gateway]\nlisen = 1\n")
    assert broken.returncode == 1 and "unknown key" in broken.stdout + broken.stderr
    assert len(of(root, "policy.reload")) == before

    # 4. SIGHUP still reloads (the outcome goes to the journal).
    served.config.write_text(text)
    os.kill(served.process.pid, signal.SIGHUP)
    assert wait_for(lambda: of(root, "policy.reload", "success")[1:], timeout=15)
    assert served.scp(keys["alice"], "-O", str(src), "GW:/inbox/z.bin").returncode == 0

    # ... and a file it cannot build, sent by SIGHUP, is journalled and kept out too.
    served.config.write_text(unusable)
    os.kill(served.process.pid, signal.SIGHUP)
    assert wait_for(lambda: of(root, "policy.reload", "failed")[1:], timeout=15)
    assert served.scp(keys["alice"], "-O", str(src), "GW:/inbox/w.bin").returncode == 0

    reloads = of(root, "policy.reload")
    assert [(r["outcome"], r["via"]) for r in reloads] == [
        ("success", "control"),
        ("failed", "control"),
        ("success", "signal"),
        ("failed", "signal"),
    ]
    assert "Not a directory" in reloads[1]["reason"]
    assert served.process.poll() is None

    # 5. No gateway: said so, exit 1.
    served.process.terminate()
    served.process.wait(15)
    gone = served.reload()
    assert gone.returncode == 1 and "no gateway runs" in gone.stderr
    console = served.console.read_text()
    assert "Traceback" not in console
    refusals = [line for line in console.splitlines() if "Not a directory" in line]
    assert len(refusals) == 2 and all("policy reload refused" in line for line in refusals)
    assert conduit("audit", "verify", "--config", str(served.config)).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_control_socket_answers_only_its_owner(served: Served) -> None:
    sock = served.root / "data" / "control.sock"
    # Even with the file mode opened up, another uid is refused by its credentials.
    os.chmod(served.root / "data", 0o755)
    os.chmod(sock, 0o666)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, then ask (relative path: no search
        try:  # permission needed on the test's private folders above)
            os.chdir(sock.parent)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(ask(Path(sock.name), "reload", 10)).encode())
        except BaseException as exc:
            os.write(write, repr(exc).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert b"not allowed" in answer, answer
    assert json.loads(answer)["ok"] is False
    assert of(served.root, "policy.reload") == []


def _slow(served: Served, keys: dict[str, Path], user: str, argv: list[str]) -> list[str]:
    """An OpenSSH command line for ``user`` against ``served``, bandwidth-limited
    (-l, Kbit/s) so that the transfer is still in flight when the reload lands."""
    options = [
        "-o",
        f"UserKnownHostsFile={served.known}",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(keys[user]),
        "-l",
        "4000",
    ]
    return [argv[0], *options, "-P", str(served.port), *argv[1:]]


REVOCATIONS = {
    # case: (user, direction, edit of the policy text, reason journalled)
    "user-removed": (
        "bob",
        "upload",
        lambda text, keys: (
            text.split("[users.bob]")[0] + text.split("[users.bob]")[1].split("\n\n", 1)[1]
        ),
        "user removed from the policy",
    ),
    "key-removed": (
        "alice",
        "upload",
        lambda text, keys: text.replace(
            keys["alice"].with_suffix(".pub").read_text().strip(),
            keys["mallory"].with_suffix(".pub").read_text().strip(),
        ),
        "key removed from the policy",
    ),
    "user-removed-legacy-scp": (
        "bob",
        "upload-legacy",
        lambda text, keys: REVOCATIONS["user-removed"][2](text, keys),
        "user removed from the policy",
    ),
    "grant-removed": (
        "alice",
        "download",
        lambda text, keys: text.replace('{ target = "outbox", ops = ["list", "read"] },', ""),
        "read /outbox/big.bin no longer allowed",
    ),
}


@pytest.mark.parametrize("case", sorted(REVOCATIONS))
def test_reload_revokes_an_open_transfer(
    served: Served, keys: dict[str, Path], tmp_path: Path, case: str
) -> None:
    user, direction, edit, reason = REVOCATIONS[case]
    root = served.root
    big = random_file(tmp_path / "big.bin", 24 * 1024 * 1024)  # ~50 s at the -l limit
    legacy = direction == "upload-legacy"
    direction = "upload" if legacy else direction
    if direction == "upload":
        argv = _slow(
            served,
            keys,
            user,
            [
                "scp",
                *(["-O"] if legacy else []),
                str(big),
                f"{user}@127.0.0.1:/inbox/big.bin",
            ],
        )
    else:
        random_file(root / "areas" / "outbox" / "big.bin", 24 * 1024 * 1024)
        argv = _slow(
            served,
            keys,
            user,
            ["scp", f"{user}@127.0.0.1:/outbox/big.bin", str(tmp_path / "got.bin")],
        )
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = wait_for(lambda: of(root, f"file.{direction}", "started"), timeout=20)
        assert started, "the transfer never started"
        transfer = started[0]["transfer"]

        answer = served.reload(edit(served.text, keys))
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert f"revoked session {started[0]['session']} ({user})" in answer.stdout
        assert reason in answer.stdout

        _, err = client.communicate(timeout=30)  # ends now, not when the file is done
        assert client.returncode != 0
        if direction == "download":
            # An uploading client may lose the disconnect message to the TCP
            # reset that closing a socket with unread upload bytes causes.
            assert "access revoked by a policy reload" in err, err
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    revokes = of(root, "session.revoke")
    assert len(revokes) == 1 and reason in revokes[0]["reason"]
    assert revokes[0]["principal"] == user and revokes[0]["session"] == started[0]["session"]
    ended = [r for r in of(root, f"file.{direction}") if r.get("transfer") == transfer]
    assert [r["outcome"] for r in ended] == ["started", "failed"]
    assert ended[1]["bytes"] < big.stat().st_size
    if direction == "upload":
        # Nothing under the final name, and no temp file left behind.
        assert sorted(p.name for p in (root / "areas" / "inbox").iterdir()) == []
    assert of(root, "policy.reload", "success")
    assert conduit("audit", "verify", "--config", str(served.config)).returncode == 0


def test_control_socket_refuses_what_it_does_not_know(served: Served) -> None:
    import socket

    sock_path = served.root / "data" / "control.sock"

    def raw(payload: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(15)
            sock.connect(str(sock_path))
            sock.sendall(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        answer: dict[str, Any] = json.loads(data)
        return answer

    assert raw(b"reload\n") == {"ok": False, "error": "bad request: one JSON object on one line"}
    assert raw(b'["reload"]\n')["ok"] is False
    unknown = raw(b'{"command": "shutdown"}\n')
    assert unknown["ok"] is False and "unknown command" in unknown["error"]
    too_long = raw(b'{"command": "' + b"x" * 10_000 + b'"}\n')
    assert too_long["ok"] is False
    assert of(served.root, "policy.reload") == []  # none of them reloaded anything
    assert raw(b'{"command": "reload"}\n')["ok"] is True


def test_reload_leaves_the_gateways_own_environment_to_the_gateway(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    """A device password in a variable only the gateway's service has: the
    admin's ``conduit reload`` must not refuse it; the gateway checks it."""
    root = tmp_path / "site"
    root.mkdir()
    config = root / "conduit.toml"
    device = (
        '\n[devices.plc]\nzone = "local"\naddress = "127.0.0.1:1"\nuser = "ops"\n'
        'root = "/srv"\npassword_env = "CONDUIT_TEST_PLC_PW"\ntrust_on_first_use = true\n'
    )
    text = policy_text(root, keys) + device
    config.write_text(text)
    process, _, _ = serve_process(config, env={"CONDUIT_TEST_PLC_PW": "s3cret"})
    try:
        assert "CONDUIT_TEST_PLC_PW" not in os.environ
        done = conduit("reload", "--config", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "s3cret" not in done.stdout + done.stderr
        # `check` in the admin's shell does flag it: it checks as serve would here.
        checked = conduit("check", "--config", str(config))
        assert checked.returncode == 1 and "CONDUIT_TEST_PLC_PW" in checked.stdout
    finally:
        process.terminate()
        process.wait(15)
