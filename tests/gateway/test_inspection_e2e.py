"""Issue #13 end to end with the real checks: real scp, scp -O and sftp
through a gateway whose checks are :class:`conduit.inspect.plan.Inspector`
(built from the policy, as ``conduit serve`` does), a real clamd with a
database the test writes, real ``ssh-keygen -Y`` and ``gpg`` signatures,
libmagic, the real journal and the CLI as its own process.

One gateway and one clamd serve the module; each test uses its own names.
The scanner-stopped test runs last (it stops the module's clamd).
"""

from __future__ import annotations

import hashlib
import os
import random
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
from tests.support.clamd import EICAR, MARKER, Clamd, available, start_clamd, stop_clamd
from tests.support.gateway import (
    RunningGateway,
    conduit_env,
    make_key,
    random_file,
    sha256,
    start_gateway,
    stop_gateway,
    wait_for,
)
from tests.support.signers import PgpKey, pgp_key, ssh_key, ssh_sign

CLIENTS = ["scp", "scp-O", "sftp"]
GRACE = 4  # seconds a file waits for its signature


def policy(root: Path, keys: dict[str, Path], clamd: Clamd) -> str:
    def pub(name: str) -> str:
        return keys[name].with_suffix(".pub").read_text().strip()

    areas = "".join(
        f'[areas.{a}]\nzone = "plant"\npath = "{root}/areas/{a}"\n\n'
        for a in ("fw", "rel", "scan", "typed")
    )
    grants = ", ".join(f'{{ target = "{a}", ops = ["list", "read", "write", "delete"] }}' for a in
                       ("fw", "rel", "scan", "typed"))  # fmt: skip
    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[gateway.limits]
idle_timeout = 0

[audit]
journal = "{root}/audit"

[inspect]
signature_grace = {GRACE}
max_evidence_size = 8192

[inspect.scan]
clamd = "{clamd.address}"
timeout = 10

[inspect.trust.vendor]
ssh_allowed_signers = "{root}/trust/allowed_signers"
ssh_namespace = "firmware"
openpgp_keys = ["{root}/trust/vendor-pgp.asc"]
sha256_lists = ["{root}/trust/SHA256SUMS"]

[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[zones.plant]
level = 1
networks = ["10.99.0.0/16"]

{areas}
[roles.engineer]
grants = [{grants}, {{ target = "rel", ops = ["approve"] }}]

[roles.release]
grants = [{{ target = "rel", ops = ["approve"] }}]

[users.alice]
keys = ["{pub("alice")}"]
roles = ["engineer"]

[users.bob]
keys = ["{pub("bob")}"]
roles = ["release"]

[[conduits]]
name = "firmware"
from = "local"
to = "plant"
paths = ["fw/**"]
require = ["signature", "scan"]
trust = ["vendor"]

[[conduits]]
name = "released"
from = "local"
to = "plant"
paths = ["rel/**"]
require = ["signature", "scan", "approval"]
trust = ["vendor"]

[[conduits]]
name = "scanned"
from = "local"
to = "plant"
paths = ["scan/**"]
require = ["scan"]

[[conduits]]
name = "typed"
from = "local"
to = "plant"
paths = ["typed/**"]
types = ["application/octet-stream"]
"""


class Site:
    def __init__(self, gw: RunningGateway, clamd: Clamd, vendor: Path, pgp: PgpKey, listed: Path):
        self.gw, self.clamd, self.vendor, self.pgp, self.listed = gw, clamd, vendor, pgp, listed
        self.items = Items(StateDB.open(gw.config.gateway.data_dir))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not available():
        pytest.fail("clamd is missing: apt-get install clamav-daemon (see .ci/run)")
    root = tmp_path_factory.mktemp("inspection")
    clamd = start_clamd(tmp_path_factory.mktemp("clamd"))
    folder = tmp_path_factory.mktemp("keys")
    keys = {name: make_key(folder, name) for name in ("alice", "bob")}
    trust = root / "trust"
    trust.mkdir()
    vendor = ssh_key(folder, "vendor")
    (trust / "allowed_signers").write_text(
        f'vendor@example.com namespaces="firmware" {vendor.with_suffix(".pub").read_text()}'
    )
    pgp = pgp_key(folder, "vendorpgp")
    (trust / "vendor-pgp.asc").write_bytes(pgp.public.read_bytes())
    listed = random_file(root / "listed" / "listed.bin", 20_000)
    (trust / "SHA256SUMS").write_text(f"{sha256(listed)}  listed.bin\n")
    text = policy(root, keys, clamd)
    (root / "conduit.toml").write_text(text)
    config = parse(text, source=root / "conduit.toml")
    gw = start_gateway(config, keys, root, "journal")  # checks: Inspector(config)
    yield Site(gw, clamd, vendor, pgp, listed)
    stop_gateway(gw)
    pgp.stop()
    stop_clamd(clamd)


def put(site: Site, client: str, src: Path, dest: str, user: str = "alice") -> Any:
    if client == "sftp":
        return site.gw.sftp(f"put {src} {dest}\n", user=user)
    return site.gw.scp(str(src), f":{dest}", legacy=client == "scp-O", user=user)


def item(site: Site, path: str) -> Any:
    found = [i for i in site.items.find(path=path)]
    assert len(found) == 1, found
    return found[0]


def records(site: Site, item_id: str) -> list[dict[str, Any]]:
    transfer = site.items.get(item_id).transfer  # type: ignore[union-attr]
    return [
        r
        for r in journal_records(site.gw.root / "audit")
        if r.get("quarantine") == item_id or (transfer and r.get("transfer") == transfer)
    ]


def final(site: Site, area: str, name: str) -> Path:
    return site.gw.area(area) / name


def firmware(tmp_path: Path, name: str, size: int = 50_000) -> Path:
    return random_file(tmp_path / name, size)


def cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args, "--config", str(site.gw.root / "conduit.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=conduit_env(),
    )


# -- hostile first ---------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_tampered_byte_is_refused_naming_the_check(
    site: Site, tmp_path: Path, client: str
) -> None:
    src = firmware(tmp_path, f"t-{client}.bin")
    sig = ssh_sign(site.vendor, src, "firmware")
    assert put(site, client, sig, f"/fw/t-{client}.bin.sig").returncode == 0  # evidence first
    data = bytearray(src.read_bytes())
    data[1234] ^= 0x01
    src.write_bytes(bytes(data))
    done = put(site, client, src, f"/fw/t-{client}.bin")
    assert done.returncode != 0
    if client == "scp-O":  # sftp and scp (SFTP mode) print their own status text
        assert "signature:" in done.stderr, done.stderr
    got = item(site, f"/fw/t-{client}.bin")
    assert got.state is ItemState.REJECTED and got.reason.startswith("signature:"), got.reason
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert not final(site, "fw", f"t-{client}.bin").exists()
    trail = records(site, got.id)
    kept = next(r for r in trail if r["type"] == "file.quarantined")
    assert kept["outcome"] == "failed" and kept["sha256"] == got.sha256
    assert kept["reason"] == got.reason and "signature:failed:" in kept["checks"], kept
    refused = next(r for r in trail if r["type"] == "file.upload" and r["outcome"] == "failed")
    assert got.sha256 in refused["error"] and "ssh-keygen" in refused["error"], refused


def test_a_signature_by_another_key_is_refused(site: Site, tmp_path: Path) -> None:
    src = firmware(tmp_path, "wrongkey.bin")
    stranger = ssh_key(tmp_path, "stranger")
    assert (
        put(site, "sftp", ssh_sign(stranger, src, "firmware"), "/fw/wrongkey.bin.sig").returncode
        == 0
    )
    assert put(site, "scp", src, "/fw/wrongkey.bin").returncode != 0
    got = item(site, "/fw/wrongkey.bin")
    assert got.state is ItemState.REJECTED and "not trusted" in got.reason, got.reason
    assert not final(site, "fw", "wrongkey.bin").exists()


@pytest.mark.parametrize(("name", "payload"), [("eicar.bin", EICAR), ("marked.bin", MARKER)])
def test_malware_is_refused(site: Site, tmp_path: Path, name: str, payload: bytes) -> None:
    src = tmp_path / name
    src.write_bytes(os.urandom(30_000) + payload + os.urandom(30_000))
    done = put(site, "scp-O", src, f"/scan/{name}")
    assert done.returncode != 0 and "scan:" in done.stderr, done.stderr
    got = item(site, f"/scan/{name}")
    assert got.state is ItemState.REJECTED and got.reason.startswith("scan:"), got.reason
    assert not final(site, "scan", name).exists()


def test_a_bin_that_is_a_shell_script_is_refused_with_its_type(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "update.bin"
    src.write_text("#!/bin/sh\nrm -rf /opt/plc\n")
    done = put(site, "scp-O", src, "/typed/update.bin")  # types alone sends it to quarantine
    assert done.returncode != 0 and "text/x-shellscript" in done.stderr, done.stderr
    assert not final(site, "typed", "update.bin").exists()
    # Fixed bytes: about 1 random file in 70 looks like something to libmagic
    # (a DOS executable, zlib, ...), which the conduit would rightly refuse.
    ok = tmp_path / "real.bin"
    ok.write_bytes(random.Random(62443).randbytes(50_000))  # application/octet-stream
    assert put(site, "sftp", ok, "/typed/real.bin").returncode == 0
    assert sha256(final(site, "typed", "real.bin")) == sha256(ok)
    assert [v["check"] for v in item(site, "/typed/real.bin").verdicts] == ["type"]


def test_a_huge_or_malformed_signature_is_refused_or_fails_the_file(
    site: Site, tmp_path: Path
) -> None:
    huge = tmp_path / "big.bin.sig"
    huge.write_bytes(b"-----BEGIN SSH SIGNATURE-----\n" + b"A" * 20_000)  # over 8 KiB
    assert put(site, "scp-O", huge, "/fw/big.bin.sig").returncode != 0
    assert not site.gw.gateway.keeper.quarantine.evidence_for("/fw/big.bin")
    broken = tmp_path / "broken.bin.sig"
    broken.write_bytes(b"-----BEGIN SSH SIGNATURE-----\nnot base64 at all\n")
    assert put(site, "sftp", broken, "/fw/broken.bin.sig").returncode == 0  # kept as evidence
    done = put(site, "scp-O", firmware(tmp_path, "broken.bin"), "/fw/broken.bin")
    assert done.returncode != 0 and "signature:" in done.stderr, done.stderr
    assert item(site, "/fw/broken.bin").state is ItemState.REJECTED
    assert not final(site, "fw", "broken.bin").exists()


def test_a_missing_signature_waits_then_expires(site: Site, tmp_path: Path) -> None:
    src = firmware(tmp_path, "unsigned.bin")
    assert put(site, "sftp", src, "/fw/unsigned.bin").returncode == 0  # pending: accepted
    assert item(site, "/fw/unsigned.bin").state is ItemState.PENDING
    assert wait_for(
        lambda: item(site, "/fw/unsigned.bin").state is ItemState.REJECTED, timeout=GRACE * 5
    )
    assert not final(site, "fw", "unsigned.bin").exists()


def test_names_differing_only_by_case_are_not_each_others_evidence(
    site: Site, tmp_path: Path
) -> None:
    src = firmware(tmp_path, "Case.bin")
    sig = ssh_sign(site.vendor, src, "firmware")
    assert put(site, "sftp", sig, "/fw/case.bin.sig").returncode == 0  # lower case: not its
    assert put(site, "sftp", src, "/fw/Case.bin").returncode == 0
    assert item(site, "/fw/Case.bin").state is ItemState.PENDING
    assert not final(site, "fw", "Case.bin").exists()


# -- good files ------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_signed_firmware_passes_signature_after_the_file(
    site: Site, tmp_path: Path, client: str
) -> None:
    src = firmware(tmp_path, f"good-{client}.bin")
    sig = ssh_sign(site.vendor, src, "firmware")
    assert put(site, client, src, f"/fw/good-{client}.bin").returncode == 0
    assert item(site, f"/fw/good-{client}.bin").state is ItemState.PENDING
    assert not final(site, "fw", f"good-{client}.bin").exists()
    assert put(site, client, sig, f"/fw/good-{client}.bin.sig").returncode == 0
    assert wait_for(lambda: item(site, f"/fw/good-{client}.bin").state is ItemState.COMMITTED)
    assert sha256(final(site, "fw", f"good-{client}.bin")) == sha256(src)
    assert not final(site, "fw", f"good-{client}.bin.sig").exists()  # evidence stays out
    checks = {v["check"]: v for v in item(site, f"/fw/good-{client}.bin").verdicts}
    assert set(checks) == {"scan", "signature"}
    assert all(v["state"] == "passed" and v["duration"] > 0 for v in checks.values())


def test_signature_before_the_file_commits_at_once(site: Site, tmp_path: Path) -> None:
    src = firmware(tmp_path, "early.bin")
    assert (
        put(site, "scp", ssh_sign(site.vendor, src, "firmware"), "/fw/early.bin.sig").returncode
        == 0
    )
    assert put(site, "sftp", src, "/fw/early.bin").returncode == 0
    assert item(site, "/fw/early.bin").state is ItemState.COMMITTED  # before the client returned
    assert sha256(final(site, "fw", "early.bin")) == sha256(src)


def test_openpgp_armoured_signature_passes(site: Site, tmp_path: Path) -> None:
    src = firmware(tmp_path, "pgp.bin")
    asc = site.pgp.sign(src, armor=True)
    assert put(site, "scp-O", asc, "/fw/pgp.bin.asc").returncode == 0
    assert put(site, "scp-O", src, "/fw/pgp.bin").returncode == 0
    assert sha256(final(site, "fw", "pgp.bin")) == sha256(src)


def test_a_file_on_the_vendor_list_passes(site: Site) -> None:
    assert put(site, "sftp", site.listed, "/fw/listed.bin").returncode == 0
    assert sha256(final(site, "fw", "listed.bin")) == sha256(site.listed)


def test_a_signed_travelling_manifest_passes(site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    src = firmware(folder, "m1.bin")
    sums = folder / "SHA256SUMS"
    sums.write_bytes(f"{sha256(src)}  m1.bin\r\n".encode())  # CRLF, as Windows tools write
    sig = ssh_sign(site.vendor, sums, "firmware")
    assert put(site, "scp", src, "/fw/m1.bin").returncode == 0
    assert item(site, "/fw/m1.bin").state is ItemState.PENDING
    assert put(site, "scp", sums, "/fw/SHA256SUMS").returncode == 0
    assert item(site, "/fw/m1.bin").state is ItemState.PENDING  # unsigned: not yet
    assert put(site, "sftp", sig, "/fw/SHA256SUMS.sig").returncode == 0
    assert wait_for(lambda: item(site, "/fw/m1.bin").state is ItemState.COMMITTED)
    assert sha256(final(site, "fw", "m1.bin")) == sha256(src)
    assert not final(site, "fw", "SHA256SUMS").exists()


# -- approval --------------------------------------------------------------------------


def test_checks_pass_then_a_second_person_releases_that_exact_file(
    site: Site, tmp_path: Path
) -> None:
    keys = site.gw.keys
    src = firmware(tmp_path, "rel.bin")
    assert (
        put(site, "scp", ssh_sign(site.vendor, src, "firmware"), "/rel/rel.bin.sig").returncode == 0
    )
    assert put(site, "scp", src, "/rel/rel.bin").returncode == 0
    held = item(site, "/rel/rel.bin")
    assert held.state is ItemState.HELD, held.reason
    own = cli(site, "approve", held.id, "--key", str(keys["alice"]))
    assert own.returncode == 1 and "cannot decide on it" in own.stderr, own.stderr
    ok = cli(site, "approve", held.id, "--key", str(keys["bob"]))
    assert ok.returncode == 0, ok.stderr
    assert wait_for(lambda: item(site, "/rel/rel.bin").state is ItemState.COMMITTED)
    assert sha256(final(site, "rel", "rel.bin")) == held.sha256 == sha256(src)
    trail = [(r["type"], r["outcome"]) for r in records(site, held.id)]
    assert (
        trail.index(("file.quarantined", "success"))
        < trail.index(("quarantine.decision", "success"))
        < trail.index(("file.commit", "success"))
    ), trail
    quarantined = next(r for r in records(site, held.id) if r["type"] == "file.quarantined")
    assert "scan:passed:" in str(quarantined) and "signature:passed:" in str(quarantined)
    # a new file under the same name needs its own approval
    again = firmware(tmp_path, "rel2.bin")
    sig = ssh_sign(site.vendor, again, "firmware", out=tmp_path / "rel.bin.sig")
    assert put(site, "sftp", sig, "/rel/rel.bin.sig").returncode == 0
    assert put(site, "sftp", again, "/rel/rel.bin").returncode == 0
    newer = [i for i in site.items.find(path="/rel/rel.bin") if i.id != held.id]
    assert len(newer) == 1 and newer[0].state is ItemState.HELD
    assert sha256(final(site, "rel", "rel.bin")) == sha256(src)


# -- kill -9 with items waiting (a real `conduit serve`) ------------------------------


def test_killed_while_items_wait_they_survive_the_restart(site: Site, tmp_path: Path) -> None:
    """A pending file (no signature yet) and a held one (checks passed, waiting
    for approval) survive kill -9; nothing is under a final name; after the
    restart the pending one still takes its signature and commits, and the
    journal verifies."""
    import shutil
    import signal

    from conduit.cli.main import main
    from tests.support.gateway import scp_argv, serve_process

    root = tmp_path / "site"
    root.mkdir()
    shutil.copytree(site.gw.root / "trust", root / "trust")
    config = root / "conduit.toml"
    text = policy(root, site.gw.keys, site.clamd).replace(
        f"signature_grace = {GRACE}", "signature_grace = 600"
    )
    config.write_text(text)
    alice = site.gw.keys["alice"]
    pending, held = firmware(tmp_path, "p.bin"), firmware(tmp_path, "h.bin")
    held_sig = ssh_sign(site.vendor, held, "firmware")

    def scp(port: int, known: Path, src: Path, dest: str) -> None:
        argv = scp_argv(port, known, alice, str(src), f"alice@127.0.0.1:{dest}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    gateway, port, known = serve_process(config)
    try:
        scp(port, known, pending, "/fw/p.bin")
        scp(port, known, held_sig, "/rel/h.bin.sig")
        scp(port, known, held, "/rel/h.bin")
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
    state = Items(StateDB.open(root / "data"))
    assert state.find(path="/fw/p.bin")[0].state is ItemState.PENDING
    assert state.find(path="/rel/h.bin")[0].state is ItemState.HELD
    finals = [p.name for a in ("fw", "rel") if (root / "areas" / a).exists()
              for p in (root / "areas" / a).iterdir()]  # fmt: skip
    assert finals == [], finals
    restarted, port, known = serve_process(config)
    try:
        assert state.find(path="/fw/p.bin")[0].state is ItemState.PENDING
        assert state.find(path="/rel/h.bin")[0].state is ItemState.HELD
        scp(port, known, ssh_sign(site.vendor, pending, "firmware"), "/fw/p.bin.sig")
        assert wait_for(lambda: state.find(path="/fw/p.bin")[0].state is ItemState.COMMITTED)
        assert sha256(root / "areas" / "fw" / "p.bin") == sha256(pending)
        assert not (root / "areas" / "rel" / "h.bin").exists()
    finally:
        restarted.terminate()
        assert restarted.wait(15) == 0
    assert main(["audit", "verify", "--config", str(config)]) == 0


# -- last: the scanner goes away -------------------------------------------------------


def test_a_stopped_scanner_fails_closed(site: Site, tmp_path: Path) -> None:
    stop_clamd(site.clamd)
    src = firmware(tmp_path, "noscan.bin")
    done = put(site, "scp-O", src, "/scan/noscan.bin")
    assert done.returncode != 0 and "scanner unavailable" in done.stderr, done.stderr
    got = item(site, "/scan/noscan.bin")
    assert got.state is ItemState.REJECTED and "scanner unavailable" in got.reason
    assert not final(site, "scan", "noscan.bin").exists()
