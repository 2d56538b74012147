"""The journal fails while the keeper decides: nothing takes effect unrecorded.

An approval, a rejection or an expiry changes what the gateway will do with
a file, so each is a journalled act like a transfer: the record is written
before the item's state moves. The journal's file layer is swapped for one
that fails the write of the keeper's records (ENOSPC, EIO), as a full or
failing disk would; the uploads are real ``scp``, the approvals the real CLI.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.audit import faults
from conduit.cli.main import main
from conduit.config import parse
from conduit.inspect.items import ItemState
from tests.gateway.test_audit_trail import journal_records
from tests.gateway.test_journal_faults import Failing
from tests.gateway.test_quarantine import cli, only_item, policy, records, upload
from tests.inspect.checks import ChecksForTests
from tests.support.gateway import (
    RunningGateway,
    random_file,
    sha256,
    start_gateway,
    stop_gateway,
    wait_for,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.support.gateway import make_key

    folder = tmp_path_factory.mktemp("keys")
    return {name: make_key(folder, name) for name in ("alice", "bob", "mallory")}


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Failing]:
    layer = Failing()
    monkeypatch.setattr(faults, "fs", layer)
    yield layer


@pytest.fixture
def site(tmp_path: Path, keys: dict[str, Path], failing: Failing) -> Iterator[RunningGateway]:
    root = tmp_path / "site"
    root.mkdir()
    text = policy(root, keys)
    (root / "conduit.toml").write_text(text)
    config = parse(text, source=root / "conduit.toml")
    running = start_gateway(config, keys, root, "journal", checks=ChecksForTests())
    yield running
    failing.match = None
    stop_gateway(running)


def _verified(site: RunningGateway) -> bool:
    return main(["audit", "verify", "--config", str(site.root / "conduit.toml")]) == 0


def _journal_back(site: RunningGateway, failing: Failing) -> None:
    failing.match = None
    site.call(site.recorder.record("policy.reload", "success"), timeout=10)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_decision_the_journal_cannot_take_is_not_carried_out(
    site: RunningGateway,
    keys: dict[str, Path],
    tmp_path: Path,
    failing: Failing,
    action: str,
    err: int,
) -> None:
    src = random_file(tmp_path / "fw.bin", 30_000)
    final = site.area("fw") / "fw.bin"
    assert upload(site, "scp", src, "/fw/fw.bin").returncode == 0
    item = only_item(site, "/fw/fw.bin")
    assert item.state is ItemState.HELD

    failing.errno, failing.match = err, b'"type":"quarantine.decision"'
    args = [action, item.id, "--key", str(keys["bob"])]
    asked = cli(site, *args, *(["--reason", "not this build"] if action == "reject" else []))
    assert asked.returncode == 0, asked.stderr  # the CLI only leaves a signed request
    assert wait_for(lambda: failing.failed >= 2)  # the keeper tried, and tried again
    # not journalled, so not done: still held, the request still waiting, nothing final
    waiting = only_item(site, "/fw/fw.bin")
    assert waiting.state is ItemState.HELD and waiting.request is not None
    assert waiting.decision is None and not final.exists()

    _journal_back(site, failing)
    done = ItemState.COMMITTED if action == "approve" else ItemState.REJECTED
    assert wait_for(lambda: only_item(site, "/fw/fw.bin").state is done)
    assert final.exists() == (action == "approve")
    if final.exists():
        assert sha256(final) == sha256(src)
    trail = [(r["type"], r["outcome"]) for r in records(site, item.id)]
    assert trail.count(("quarantine.decision", "success")) == 1, trail
    decided = trail.index(("quarantine.decision", "success"))
    if action == "approve":
        assert trail[decided + 1 :] == [("file.commit", "intent"), ("file.commit", "success")]
    assert _verified(site)


def test_an_expiry_the_journal_cannot_take_waits_for_it(
    site: RunningGateway, tmp_path: Path, failing: Failing
) -> None:
    src = random_file(tmp_path / "old.bin", 1_000)
    assert upload(site, "scp", src, "/fw/old.bin").returncode == 0
    item = only_item(site, "/fw/old.bin")
    keeper = site.gateway.keeper
    later = (item.deadline or 0) + 1

    failing.match = b'"type":"quarantine.expire"'
    with pytest.raises(Exception, match="journal"):
        site.call(keeper.tick(later))
    assert failing.failed >= 1
    assert only_item(site, "/fw/old.bin").state is ItemState.HELD  # put back: not recorded

    _journal_back(site, failing)
    site.call(keeper.tick(later))
    assert only_item(site, "/fw/old.bin").state is ItemState.EXPIRED
    expiries = [r for r in journal_records(site.root / "audit") if r["type"] == "quarantine.expire"]
    assert [r["quarantine"] for r in expiries] == [item.id]
    assert _verified(site)
