"""`conduit user totp` while the journal cannot be written: nothing is enrolled.

An enrolment changes who may log in, so its record comes first, written by
the running gateway over its control socket or, with no gateway running, by
the command itself. Here the journal's file layer fails the enrolment's
record (ENOSPC, EIO) on either path: the command says why in one line, the
user keeps the secret they had (or none), and once the journal takes records
again the enrolment works and ``conduit audit verify`` passes.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.audit import faults
from conduit.auth.secrets import SecretStore
from conduit.cli.main import main
from conduit.config import parse
from tests.gateway.test_audit_trail import journal_records
from tests.gateway.test_journal_faults import Failing
from tests.gateway.test_totp import policy
from tests.support.gateway import RunningGateway, make_key, start_gateway, stop_gateway

ENROL = b'"type":"auth.totp_enrol"'


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Failing]:
    layer = Failing()
    monkeypatch.setattr(faults, "fs", layer)
    yield layer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    from tests.gateway.test_totp import USERS

    keys = {name: make_key(tmp_path, name) for name in USERS}
    for area in ("inbox", "plantbox"):
        (tmp_path / "areas" / area).mkdir(parents=True)
    text = policy(tmp_path, keys) + f'\n[audit]\njournal = "{tmp_path}/audit"\n'
    (tmp_path / "conduit.toml").write_text(text)
    return tmp_path


@pytest.fixture
def gateway(root: Path, failing: Failing) -> Iterator[RunningGateway]:
    text = (root / "conduit.toml").read_text()
    running = start_gateway(parse(text, source=root / "conduit.toml"), {}, root, "journal")
    running.call(running.gateway.start_control())  # what `conduit user totp` asks
    yield running
    failing.match = None
    if running.thread.is_alive():
        stop_gateway(running)


def totp(root: Path, user: str) -> int:
    return main(["user", "totp", user, "--config", str(root / "conduit.toml")])


def enrolled(root: Path, user: str) -> bool:
    store = SecretStore.open(root / "data")
    try:
        return store.enrolled(user)
    finally:
        store.close()


def enrolments(root: Path) -> list[str]:
    return [
        r["principal"] for r in journal_records(root / "audit") if r["type"] == "auth.totp_enrol"
    ]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_the_running_gateway_cannot_journal_it(
    root: Path,
    gateway: RunningGateway,
    failing: Failing,
    err: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing.errno, failing.match = err, ENROL
    assert totp(root, "bob") == 1
    err_text = capsys.readouterr().err
    assert "not enrolled: the gateway refused to journal it" in err_text, err_text
    assert "Traceback" not in err_text
    assert failing.failed >= 1
    assert not enrolled(root, "bob") and enrolments(root) == []

    failing.match = None
    gateway.call(gateway.recorder.record("policy.reload", "success"), timeout=10)
    assert totp(root, "bob") == 0
    assert "otpauth://" in capsys.readouterr().out  # the secret is shown, once
    assert enrolled(root, "bob") and enrolments(root) == ["bob"]
    stop_gateway(gateway)  # verify reads a closed journal, sealed by its last checkpoint
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_no_gateway_and_the_journal_cannot_take_it(
    root: Path, failing: Failing, err: int, capsys: pytest.CaptureFixture[str]
) -> None:
    failing.errno, failing.match = err, ENROL
    assert totp(root, "alice") == 1
    err_text = capsys.readouterr().err
    assert "not enrolled" in err_text and "Traceback" not in err_text, err_text
    assert not enrolled(root, "alice") and enrolments(root) == []

    failing.match = None
    assert totp(root, "alice") == 0
    assert enrolled(root, "alice") and enrolments(root) == ["alice"]
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0
