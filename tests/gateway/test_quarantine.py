"""Quarantine and four-eyes approval end to end: real scp, scp -O, sftp, the
real journal, the CLI as its own process, the gateway's keeper.

One gateway serves the module (a zone ``plant`` the client at 127.0.0.1
reaches through three conduits: ``approval`` for /fw, ``signed`` for /sig,
``scanned`` for /scan, with the test-only checks of tests/inspect/checks.py);
each test uses its own file names.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conduit.config import parse
from conduit.inspect.items import Items, ItemState
from conduit.state import StateDB
from tests.gateway.test_audit_trail import journal_records
from tests.inspect.checks import ChecksForTests
from tests.support.gateway import (
    RunningGateway,
    conduit_env,
    random_file,
    sha256,
    start_gateway,
    stop_gateway,
    wait_for,
)


def policy(root: Path, keys: dict[str, Path]) -> str:
    def pub(name: str) -> str:
        return keys[name].with_suffix(".pub").read_text().strip()

    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[gateway.limits]
idle_timeout = 0

[audit]
journal = "{root}/audit"

[inspect]
max_evidence_size = 4096

[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[zones.plant]
level = 1
networks = ["10.99.0.0/16"]

[areas.fw]
zone = "plant"
path = "{root}/areas/fw"

[areas.sig]
zone = "plant"
path = "{root}/areas/sig"

[areas.scan]
zone = "plant"
path = "{root}/areas/scan"

[roles.engineer]
grants = [
  {{ target = "fw", ops = ["list", "read", "write", "delete", "rename", "approve"] }},
  {{ target = "sig", ops = ["list", "read", "write"] }},
  {{ target = "scan", ops = ["list", "read", "write"] }},
]

[roles.release]
grants = [{{ target = "fw", ops = ["approve"], paths = ["*.bin"] }}]

[users.alice]
keys = ["{pub("alice")}"]
roles = ["engineer"]

[users.bob]
keys = ["{pub("bob")}"]
roles = ["release"]

[users.mallory]
keys = ["{pub("mallory")}"]
roles = []

[[conduits]]
name = "approval"
from = "local"
to = "plant"
paths = ["fw/**"]
require = ["approval"]

[[conduits]]
name = "readback"
from = "plant"
to = "local"
paths = ["fw/**"]
require = ["approval"]

[[conduits]]
name = "signed"
from = "local"
to = "plant"
paths = ["sig/**"]
require = ["signature"]

[[conduits]]
name = "scanned"
from = "local"
to = "plant"
paths = ["scan/**"]
require = ["scan"]
"""


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]
) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("quarantine")
    text = policy(root, keys)
    (root / "conduit.toml").write_text(text)
    config = parse(text, source=root / "conduit.toml")
    running = start_gateway(config, keys, root, "journal", checks=ChecksForTests())
    yield running
    stop_gateway(running)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.support.gateway import make_key

    folder = tmp_path_factory.mktemp("keys")
    return {name: make_key(folder, name) for name in ("alice", "bob", "mallory")}


def cli(site: RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args, "--config", str(site.root / "conduit.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=conduit_env(),
    )


@functools.cache
def _store(data_dir: Path) -> Items:
    return Items(StateDB.open(data_dir))


def store(site: RunningGateway) -> Items:
    """The state file through a connection of the test's own, as the CLI has
    (the gateway's connection belongs to its event loop's thread)."""
    return _store(site.config.gateway.data_dir)


def items(site: RunningGateway, path: str) -> list[Any]:
    return store(site).find(path=path)


def only_item(site: RunningGateway, path: str) -> Any:
    found = items(site, path)
    assert len(found) == 1, found
    return found[0]


def records(site: RunningGateway, item: str) -> list[dict[str, Any]]:
    """The item's records: by its id, and its upload's by the transfer id."""
    transfer = store(site).get(item).transfer  # type: ignore[union-attr]
    return [
        r
        for r in journal_records(site.root / "audit")
        if r.get("quarantine") == item or (r.get("transfer") == transfer and transfer)
    ]


def upload(site: RunningGateway, client: str, src: Path, dest: str, user: str = "alice") -> Any:
    if client == "sftp":
        return site.sftp(f"put {src} {dest}\n", user=user)
    return site.scp(str(src), f":{dest}", legacy=client == "scp-O", user=user)


CLIENTS = ["scp", "scp-O", "sftp"]


def trail_of(site: RunningGateway, item_id: str) -> list[tuple[str, str]]:
    """The (type, outcome) of every record of a quarantined item, in journal order."""
    return [(r["type"], r["outcome"]) for r in records(site, item_id)]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_file_needing_approval_waits_and_only_a_second_person_releases_it(
    site: RunningGateway, keys: dict[str, Path], tmp_path: Path, client: str
) -> None:
    src = random_file(tmp_path / "rtu.bin", 70_000)
    name = f"/fw/rtu-{client}.bin"
    final = site.area("fw") / name.rsplit("/", 1)[1]
    done = upload(site, client, src, name)
    assert done.returncode == 0, done.stderr  # into quarantine: the upload succeeded
    item = only_item(site, name)
    assert item.state is ItemState.HELD and item.sha256 == sha256(src)
    assert item.uploader == "alice" and item.size == 70_000
    assert not final.exists()

    # the uploader holds an approve grant, and still may not release their own file
    own = cli(site, "approve", item.id, "--key", str(keys["alice"]))
    assert own.returncode == 1 and "cannot decide on it" in own.stderr, own.stderr
    # a user without the grant may not either
    other = cli(site, "approve", item.id, "--key", str(keys["mallory"]))
    assert other.returncode == 1 and "may not approve" in other.stderr, other.stderr
    assert only_item(site, name).state is ItemState.HELD and not final.exists()

    ok = cli(site, "approve", item.id, "--key", str(keys["bob"]))
    assert ok.returncode == 0, ok.stderr
    assert wait_for(lambda: only_item(site, name).state is ItemState.COMMITTED)
    assert sha256(final) == sha256(src)
    # moved into the area (same file system), not copied; readable as any upload
    assert not site.gateway.keeper.quarantine.data(item.id).exists()
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o644 & ~umask
    # The item shows COMMITTED a moment before its file.commit success is written.
    wait_for(lambda: ("file.commit", "success") in trail_of(site, item.id))
    trail = trail_of(site, item.id)
    assert trail == [
        ("file.upload", "started"),
        ("file.upload", "intent"),
        ("file.quarantined", "success"),
        ("file.upload", "success"),
        ("quarantine.decision", "success"),
        ("file.commit", "intent"),
        ("file.commit", "success"),
    ], trail
    assert all(r["quarantine"] == item.id for r in records(site, item.id))  # on every record
    decision = next(r for r in records(site, item.id) if r["type"] == "quarantine.decision")
    assert decision["principal"] == "bob" and decision["sha256"] == item.sha256
    assert decision["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
    checked = cli(site, "quarantine", "verify", item.id)
    assert checked.returncode == 0 and "signed by bob: verifies" in checked.stdout, checked.stderr
    # the record rewritten to say bob rejected it: the signature gives it away
    forged = {**json.loads(json.dumps(only_item(site, name).decision)), "action": "reject"}
    with store(site).db.transaction() as tx:
        tx.execute(
            "UPDATE quarantine_items SET decision = ? WHERE id = ?", (json.dumps(forged), item.id)
        )
    tampered = cli(site, "quarantine", "verify", item.id)
    assert tampered.returncode == 1 and "does not verify" in tampered.stderr


def test_a_reupload_after_approval_needs_its_own_approval(
    site: RunningGateway, keys: dict[str, Path], tmp_path: Path
) -> None:
    first = random_file(tmp_path / "a.bin", 1000)
    assert upload(site, "scp", first, "/fw/again.bin").returncode == 0
    item = only_item(site, "/fw/again.bin")
    assert cli(site, "approve", item.id, "--key", str(keys["bob"])).returncode == 0
    assert wait_for(lambda: (site.area("fw") / "again.bin").exists())
    second = random_file(tmp_path / "b.bin", 1000)
    assert upload(site, "sftp", second, "/fw/again.bin").returncode == 0
    newer = [i for i in items(site, "/fw/again.bin") if i.id != item.id]
    assert len(newer) == 1 and newer[0].state is ItemState.HELD
    site.call(site.gateway.keeper.tick())
    # the old approval named the old SHA-256: the final name keeps the first file
    assert sha256(site.area("fw") / "again.bin") == sha256(first)


def test_rejection_leaves_nothing_under_the_final_name(
    site: RunningGateway, keys: dict[str, Path], tmp_path: Path
) -> None:
    src = random_file(tmp_path / "r.bin", 500)
    assert upload(site, "scp-O", src, "/fw/rejected.bin").returncode == 0
    item = only_item(site, "/fw/rejected.bin")
    no_reason = cli(site, "reject", item.id, "--key", str(keys["bob"]))
    assert no_reason.returncode == 2  # --reason is required
    done = cli(site, "reject", item.id, "--key", str(keys["bob"]), "--reason", "wrong build")
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: only_item(site, "/fw/rejected.bin").state is ItemState.REJECTED)
    assert "wrong build" in only_item(site, "/fw/rejected.bin").reason
    assert not (site.area("fw") / "rejected.bin").exists()
    # a rejected item cannot be approved afterwards
    late = cli(site, "approve", item.id, "--key", str(keys["bob"]))
    assert late.returncode == 1 and "not waiting for approval" in late.stderr


def test_a_forged_decision_in_the_state_file_releases_nothing(
    site: RunningGateway, keys: dict[str, Path], tmp_path: Path
) -> None:
    src = random_file(tmp_path / "f.bin", 300)
    assert upload(site, "sftp", src, "/fw/forged.bin").returncode == 0
    item = only_item(site, "/fw/forged.bin")
    # someone able to write the state file, but without bob's key
    forged = {"action": "approve", "by": "bob", "at": 0, "signature": "not a signature"}
    assert store(site).ask(item.id, forged, expect=(ItemState.HELD,))
    site.call(site.gateway.keeper.tick())
    assert only_item(site, "/fw/forged.bin").state is ItemState.HELD
    assert not (site.area("fw") / "forged.bin").exists()
    # the uploader's own, genuinely signed approval, written past the CLI's checks
    from conduit.inspect import approval

    text = approval.message(item.id, item.sha256, "approve")
    own = {"action": "approve", "by": "alice", "signature": approval.sign(keys["alice"], text)}
    assert store(site).ask(item.id, own, expect=(ItemState.HELD,))
    site.call(site.gateway.keeper.tick())
    assert only_item(site, "/fw/forged.bin").state is ItemState.HELD
    assert not (site.area("fw") / "forged.bin").exists()
    denied = [r for r in records(site, item.id) if r["type"] == "quarantine.decision"]
    assert [r["outcome"] for r in denied] == ["denied", "denied"]
    assert "does not verify" in denied[0]["reason"]
    assert "cannot decide on it" in denied[1]["reason"]


def test_names_differing_only_by_case_are_different_items(
    site: RunningGateway, keys: dict[str, Path], tmp_path: Path
) -> None:
    upper = random_file(tmp_path / "u.bin", 100)
    lower = random_file(tmp_path / "l.bin", 100)
    assert upload(site, "scp", upper, "/fw/Case.bin").returncode == 0
    assert upload(site, "scp", lower, "/fw/case.bin").returncode == 0
    item = only_item(site, "/fw/Case.bin")
    assert only_item(site, "/fw/case.bin").id != item.id
    assert cli(site, "approve", item.id, "--key", str(keys["bob"])).returncode == 0
    assert wait_for(lambda: (site.area("fw") / "Case.bin").exists())
    assert sha256(site.area("fw") / "Case.bin") == sha256(upper)
    assert not (site.area("fw") / "case.bin").exists()
    assert only_item(site, "/fw/case.bin").state is ItemState.HELD
    # a rename through such a conduit would skip the obligations: refused
    moved = site.sftp("rename /fw/Case.bin /fw/elsewhere.bin\n")
    assert moved.returncode != 0 and (site.area("fw") / "Case.bin").exists()
    assert not (site.area("fw") / "elsewhere.bin").exists()
    # a download through a conduit requiring approval: only the approved bytes
    fetched = site.scp(":/fw/Case.bin", str(tmp_path / "back.bin"), legacy=True)
    assert fetched.returncode == 0, fetched.stderr
    assert sha256(tmp_path / "back.bin") == sha256(upper)
    (site.area("fw") / "planted.bin").write_bytes(b"put there behind the gateway")
    (site.area("fw") / "Case.bin").write_bytes(b"changed after its approval")
    for name in ("planted.bin", "Case.bin"):
        refused = site.scp(f":/fw/{name}", str(tmp_path / f"got-{name}"), legacy=True)
        assert refused.returncode != 0 and "not released" in refused.stderr, refused.stderr
        assert not (tmp_path / f"got-{name}").exists()
        got = site.sftp(f"get /fw/{name} {tmp_path / f'sftp-{name}'}\n")
        assert got.returncode != 0 and not (tmp_path / f"sftp-{name}").exists()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_failing_check_refuses_with_its_reason_and_keeps_the_file(
    site: RunningGateway, tmp_path: Path, client: str
) -> None:
    src = tmp_path / "evil.bin"
    src.write_bytes(b"EVIL" + bytes(5000))
    name = f"/scan/evil-{client}.bin"
    done = upload(site, client, src, name)
    assert done.returncode != 0
    if client == "scp-O":  # the SCP error line carries the reason
        assert "magic: forbidden content" in done.stderr, done.stderr
    item = only_item(site, name)
    assert item.state is ItemState.REJECTED and item.reason == "magic: forbidden content"
    assert item.sha256 == sha256(src)
    assert not (site.area("scan") / name.rsplit("/", 1)[1]).exists()
    failed = [r for r in records(site, item.id) if r["type"] == "file.quarantined"]
    assert failed[0]["outcome"] == "failed" and "magic:failed" in failed[0]["checks"]
    # a clean file through the same conduit is committed before the client returns
    clean = random_file(tmp_path / "clean.bin", 5000)
    assert upload(site, client, clean, f"/scan/clean-{client}.bin").returncode == 0
    assert sha256(site.area("scan") / f"clean-{client}.bin") == sha256(clean)
    committed = only_item(site, f"/scan/clean-{client}.bin")
    site.call(site.gateway.keeper.tick())  # the loop must not commit it a second time
    commits = [r["outcome"] for r in records(site, committed.id) if r["type"] == "file.commit"]
    assert commits == ["intent", "success"]


def test_evidence_may_arrive_before_or_after_its_file(site: RunningGateway, tmp_path: Path) -> None:
    after = random_file(tmp_path / "after.bin", 2000)
    assert upload(site, "scp", after, "/sig/after.bin").returncode == 0
    assert only_item(site, "/sig/after.bin").state is ItemState.PENDING
    assert not (site.area("sig") / "after.bin").exists()
    sig = tmp_path / "after.bin.sig"
    sig.write_text(sha256(after))
    assert upload(site, "sftp", sig, "/sig/after.bin.sig").returncode == 0
    assert only_item(site, "/sig/after.bin").state is ItemState.COMMITTED
    assert sha256(site.area("sig") / "after.bin") == sha256(after)
    assert not (site.area("sig") / "after.bin.sig").exists()  # evidence stays with the item

    before = random_file(tmp_path / "before.bin", 2000)
    early = tmp_path / "before.bin.sig"
    early.write_text(sha256(before))
    assert upload(site, "scp-O", early, "/sig/before.bin.sig").returncode == 0
    assert upload(site, "scp-O", before, "/sig/before.bin").returncode == 0
    assert sha256(site.area("sig") / "before.bin") == sha256(before)

    # evidence is small: a huge "signature" is refused, and names no file
    huge = random_file(tmp_path / "huge.bin.sig", 5000)
    assert upload(site, "sftp", huge, "/sig/huge.bin.sig").returncode != 0
    events = journal_records(site.root / "audit")
    kept = [r for r in events if r["type"] == "file.evidence"]
    assert {r["path"] for r in kept} == {"/sig/after.bin.sig", "/sig/before.bin.sig"}


def test_pending_then_expired_and_approvals_expire(
    site: RunningGateway, keys: dict[str, Path], tmp_path: Path
) -> None:
    src = random_file(tmp_path / "late.bin", 100)
    assert upload(site, "scp", src, "/sig/never.bin").returncode == 0
    assert upload(site, "scp", src, "/fw/unapproved.bin").returncode == 0
    ghost = tmp_path / "ghost.bin.sig"
    ghost.write_text("a signature for a file that never arrives")
    assert upload(site, "sftp", ghost, "/sig/ghost.bin.sig").returncode == 0
    keeper = site.gateway.keeper
    site.call(keeper.tick(now=1e12))  # far past signature_grace and approval_expiry
    never = only_item(site, "/sig/never.bin")
    assert never.state is ItemState.REJECTED and "grace time passed" in never.reason
    assert only_item(site, "/fw/unapproved.bin").state is ItemState.EXPIRED
    assert not (site.area("sig") / "never.bin").exists()
    assert not (site.area("fw") / "unapproved.bin").exists()
    # the orphan signature is dropped once no waiting file of its folder needs it
    assert not site.gateway.keeper.quarantine.evidence_for("/sig/ghost.bin")
    dropped = [
        r
        for r in journal_records(site.root / "audit")
        if r["type"] == "quarantine.expire" and r.get("path") == "/sig/ghost.bin.sig"
    ]
    assert len(dropped) == 1 and dropped[0]["evidence"]
    # an expired item may still be released, by the same rules as an approval
    expired = only_item(site, "/fw/unapproved.bin")
    assert cli(site, "approve", expired.id, "--key", str(keys["bob"])).returncode == 1
    own = cli(site, "quarantine", "release", expired.id, "--key", str(keys["alice"]))
    assert own.returncode == 1 and "cannot decide on it" in own.stderr
    done = cli(site, "quarantine", "release", expired.id, "--key", str(keys["bob"]))
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: (site.area("fw") / "unapproved.bin").exists())
    # a rejected item's bytes can be purged; a waiting one's cannot
    assert cli(site, "quarantine", "purge", never.id).returncode == 0
    assert wait_for(lambda: only_item(site, "/sig/never.bin").state is ItemState.PURGED)
    # the keeper journals the decision, then removes the bytes: wait for both
    assert wait_for(lambda: not site.gateway.keeper.quarantine.data(never.id).exists())
    held = random_file(tmp_path / "held.bin", 10)
    assert upload(site, "scp", held, "/fw/still-held.bin").returncode == 0
    waiting = cli(site, "quarantine", "purge", only_item(site, "/fw/still-held.bin").id)
    assert waiting.returncode == 1 and "reject it first" in waiting.stderr
    shown = cli(site, "quarantine", "show", never.id, "--json")
    assert json.loads(shown.stdout)["state"] == "purged"


def test_approvals_lists_what_waits_as_json(site: RunningGateway, tmp_path: Path) -> None:
    src = random_file(tmp_path / "list.bin", 10)
    assert upload(site, "scp", src, "/fw/listed.bin").returncode == 0
    out = cli(site, "approvals", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["path"]: r for r in json.loads(out.stdout)}
    assert rows["/fw/listed.bin"]["state"] == "held"
    assert rows["/fw/listed.bin"]["sha256"] == sha256(src)
    assert all(r["state"] in ("pending", "held", "approved") for r in rows.values())
    item = rows["/fw/listed.bin"]["id"]
    table = cli(site, "approvals")
    assert table.returncode == 0 and f"{item}  held      alice from 127.0.0.1" in table.stdout
    shown = cli(site, "quarantine", "show", item)
    assert shown.returncode == 0 and sha256(src) in shown.stdout
    missing = cli(site, "approve", "q-000000000000", "--key", str(tmp_path / "nokey"))
    assert missing.returncode == 1 and "no quarantine item" in missing.stderr


# -- kill -9 with items in quarantine (a real `conduit serve`) -------------------------


@pytest.mark.parametrize("hold", ["after-intent:file.upload", "after-intent:file.commit"])
def test_killed_with_items_pending_they_survive_and_nothing_is_final(
    keys: dict[str, Path], tmp_path: Path, hold: str
) -> None:
    """Killed after an upload's intent (the bytes not yet kept) or after a
    commit's intent (approved, not yet copied): after a restart the held item
    is still held, the approved one is committed by the keeper, nothing is
    under a final name it should not be, and the journal verifies."""
    from conduit.cli.main import main
    from tests.gateway.test_writeahead import outcomes_of
    from tests.support.gateway import scp_argv, serve_process

    root = tmp_path / "site"
    root.mkdir()
    config = root / "conduit.toml"
    config.write_text(policy(root, keys))
    fw = root / "areas" / "fw"
    held_file = tmp_path / "held"
    gateway, port, known = serve_process(
        config, env={"CONDUIT_HOLD_AT": hold, "CONDUIT_HOLD_FILE": str(held_file)}
    )
    a, b = random_file(tmp_path / "a.bin", 50_000), random_file(tmp_path / "b.bin", 50_000)
    clients = []
    try:
        if hold.endswith("file.commit"):
            for src in (a, b):
                argv = scp_argv(
                    port, known, keys["alice"], str(src), f"alice@127.0.0.1:/fw/{src.name}"
                )
                assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
            state = Items(StateDB.open(root / "data"))
            item = state.find(path="/fw/a.bin")[0]
            done = subprocess.run(
                [sys.executable, "-m", "conduit", "approve", item.id, "--key", str(keys["bob"]),
                 "--config", str(config)],
                capture_output=True, text=True, timeout=60, env=conduit_env(),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        else:
            argv = scp_argv(port, known, keys["alice"], str(a), "alice@127.0.0.1:/fw/a.bin")
            clients.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        assert wait_for(lambda: held_file.exists() and held_file.read_text(), timeout=30)
        gateway.kill()
        gateway.wait(10)
    finally:
        for client in clients:
            client.kill()
            client.wait(10)
    assert not (fw / "a.bin").exists() and not (fw / "b.bin").exists()
    restarted, _, _ = serve_process(config)
    try:
        state = Items(StateDB.open(root / "data"))
        if hold.endswith("file.commit"):
            # the approval survived: the keeper commits the exact bytes approved
            assert wait_for(lambda: (fw / "a.bin").exists(), timeout=20)
            assert sha256(fw / "a.bin") == sha256(a)
            assert state.find(path="/fw/b.bin")[0].state is ItemState.HELD
        else:
            assert state.find(path="/fw/a.bin") == []  # never kept: nothing to approve
            leftovers = [p.name for p in (root / "data" / "quarantine").iterdir()]
            assert not [n for n in leftovers if n.startswith(".part-")], leftovers
    finally:
        restarted.terminate()
        assert restarted.wait(15) == 0
    assert not (fw / "b.bin").exists()
    records = journal_records(root / "audit")
    type_ = hold.rsplit(":", 1)[1]
    intents = [r for r in records if r["outcome"] == "intent" and r["type"] == type_]
    first = outcomes_of(records, intents[0])
    assert [r["outcome"] for r in first] == ["failed"], first
    assert first[0]["note"].startswith("settled at recovery")
    assert main(["audit", "verify", "--config", str(config)]) == 0
