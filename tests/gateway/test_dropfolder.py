"""One-way drop folders with stock OpenSSH clients, and hidden things that read as missing.

A write-only conduit (enterprise -> DMZ): the engineer may put firmware into
/firmware but nothing flows back, so its contents must stay invisible while
``scp``, ``scp -O``, ``sftp put`` and ``sftp cd`` + ``put`` all work. The
client's zone comes from its source address (``-o BindAddress``).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.gateway.test_audit_trail import journal_records
from tests.support.gateway import RunningGateway, random_file, sha256

ENTERPRISE, DMZ = "127.0.0.2", "127.0.0.3"
SECRET = b"someone else's firmware\n"


def drop_policy(root: Path, keys: dict[str, Path]) -> str:
    def pub(name: str) -> str:
        return keys[name].with_suffix(".pub").read_text().strip()

    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%a")
    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[audit]
journal = "{root}/audit"

[zones.enterprise]
level = 4
networks = ["{ENTERPRISE}/32", "127.0.0.1/32"]
[zones.dmz]
level = 3.5
networks = ["{DMZ}/32"]

[areas.firmware]
zone = "dmz"
path = "{root}/areas/firmware"

[roles.engineer]
grants = [{{ target = "firmware", ops = ["list", "read", "write", "mkdir"] }}]

[users.alice]
keys = ["{pub("alice")}"]
roles = ["engineer"]

[[conduits]]
name = "firmware-drop"
from = "enterprise"
to = "dmz"
paths = ["*.bin"]
max_size = "1MiB"

[[conduits]]
name = "images-tomorrow"
from = "enterprise"
to = "dmz"
paths = ["*.img"]
window = "{tomorrow} 00:00-23:59"
"""


@pytest.fixture
def drop(make_gateway, keys: dict[str, Path], tmp_path: Path) -> RunningGateway:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    text = drop_policy(root, keys)
    (root / "conduit.toml").write_text(text)
    gw = make_gateway(text=text, recorder="journal")
    (gw.area("firmware") / "existing.bin").write_bytes(SECRET)
    (gw.area("firmware") / "sub").mkdir()
    return gw


def ent() -> tuple[str, ...]:
    return ("-o", f"BindAddress={ENTERPRISE}")


def records(gw: RunningGateway, type: str, outcome: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    return [
        r
        for r in journal_records(gw.config.audit.journal)
        if r.get("type") == type and (outcome is None or r.get("outcome") == outcome)
    ]


def verified(gw: RunningGateway) -> bool:
    site = gw.config.audit.journal.parent  # where the fixture wrote conduit.toml
    return main(["audit", "verify", "--config", str(site / "conduit.toml")]) == 0


def test_scp_into_drop_folder(drop: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    """`scp f gw:/firmware/` and `scp f gw:/firmware/NAME`, both protocols."""
    a = random_file(tmp_path / "a.bin", 300_000)
    b = random_file(tmp_path / "b.bin", 1000)
    result = drop.scp(str(a), ":/firmware/", legacy=legacy, extra=ent())
    assert result.returncode == 0, result.stderr
    result = drop.scp(str(b), ":/firmware/named.bin", legacy=legacy, extra=ent())
    assert result.returncode == 0, result.stderr
    result = drop.scp(str(b), ":/firmware/sub/", legacy=legacy, extra=ent())
    assert result.returncode == 0, result.stderr
    area = drop.area("firmware")
    assert sha256(area / "a.bin") == sha256(a) and sha256(area / "named.bin") == sha256(b)
    assert sha256(area / "sub" / "b.bin") == sha256(b)
    assert (area / "existing.bin").read_bytes() == SECRET
    paths = sorted(r["path"] for r in records(drop, "file.upload", "success"))
    assert paths == ["/firmware/a.bin", "/firmware/named.bin", "/firmware/sub/b.bin"]
    assert verified(drop)


def test_sftp_cd_and_put_into_drop_folder(drop: RunningGateway, tmp_path: Path) -> None:
    a = random_file(tmp_path / "a.bin", 5000)
    b = random_file(tmp_path / "b.bin", 6000)
    batch = f"cd /firmware\nput {a}\ncd sub\nput {b}\nput {b} /firmware/\n"
    result = drop.sftp(batch, extra=ent())
    assert result.returncode == 0, result.stderr
    area = drop.area("firmware")
    assert sha256(area / "a.bin") == sha256(a)
    assert sha256(area / "sub" / "b.bin") == sha256(b) == sha256(area / "b.bin")
    assert len(records(drop, "file.upload", "success")) == 3
    assert verified(drop)


def test_drop_folder_contents_stay_invisible(drop: RunningGateway, tmp_path: Path) -> None:
    """Listing is refused with its reason; a file inside answers like a missing one."""
    listing = drop.sftp("ls /firmware\n", extra=ent())
    assert listing.returncode != 0 and "existing" not in listing.stdout + listing.stderr
    assert "no conduit allows dmz -> enterprise" in records(drop, "access.denied")[-1]["reason"]
    for command in ("ls -l /firmware/{}", "get /firmware/{} " + str(tmp_path / "x")):
        there = drop.sftp(command.format("existing.bin") + "\n", extra=ent())
        absent = drop.sftp(command.format("nothing.bin") + "\n", extra=ent())
        assert there.returncode != 0 and absent.returncode != 0
        assert there.stderr.replace("existing", "nothing") == absent.stderr, command
        assert str(len(SECRET)) not in there.stdout + there.stderr
    for legacy in (False, True):
        there = drop.scp(":/firmware/existing.bin", str(tmp_path), legacy=legacy, extra=ent())
        absent = drop.scp(":/firmware/nothing.bin", str(tmp_path), legacy=legacy, extra=ent())
        assert there.returncode != 0 and absent.returncode != 0
        assert there.stderr.replace("existing", "nothing") == absent.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "existing.bin").exists()


def test_replacing_a_file_in_drop_folder_needs_delete(
    drop: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    """Without delete, an upload cannot destroy what is already there."""
    src = random_file(tmp_path / "existing.bin", 10)
    result = drop.scp(str(src), ":/firmware/", legacy=legacy, extra=ent())
    assert result.returncode != 0
    assert (drop.area("firmware") / "existing.bin").read_bytes() == SECRET
    (denied,) = [r for r in records(drop, "access.denied") if r["operation"] == "delete"]
    assert "replace an existing file" in denied["reason"]
    if legacy:
        assert "replacing a file needs delete" in result.stderr
    assert verified(drop)


@pytest.mark.parametrize(
    ("name", "size", "words"),
    [("big.bin", 2 * 1024 * 1024, "larger than"), ("fw.img", 1000, "outside the window")],
)
def test_client_hears_the_real_cause(
    drop: RunningGateway, tmp_path: Path, name: str, size: int, words: str
) -> None:
    """Over the size, outside the window: said as such (legacy SCP carries text),
    and as 'permission denied', never 'no such file', over SFTP."""
    src = random_file(tmp_path / name, size)
    result = drop.scp(str(src), ":/firmware/", legacy=True, extra=ent())
    assert result.returncode != 0 and words in result.stderr, result.stderr
    result = drop.scp(str(src), ":/firmware/", extra=ent())
    assert result.returncode != 0
    assert "No such file" not in result.stderr, result.stderr
    assert sorted(os.listdir(drop.area("firmware"))) == ["existing.bin", "sub"]
    assert not records(drop, "file.upload", "success")
