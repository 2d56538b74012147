"""``check`` refuses areas laid over the gateway's own files or another zone's area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conduit.cli.main import main
from conduit.config import parse
from conduit.site.check import check, errors

HEAD = """
[gateway]
data_dir = "data"
{gateway}
[zones.a]
level = 3
networks = ["10.0.0.0/24"]
[zones.b]
level = 2
networks = ["10.0.1.0/24"]
[roles.r]
grants = [{{ target = "x", ops = ["list"] }}]
[users.u]
keys = ["k"]
roles = ["r"]
[areas.x]
zone = "a"
path = "{x}"
{more}
"""


def problems(tmp_path: Path, x: str, more: str = "", gateway: str = "") -> list[str]:
    text = HEAD.format(x=x, more=more, gateway=gateway)
    config = parse(text, source=tmp_path / "conduit.toml")
    return [str(p) for p in check(config, text) if "areas" in p.key]


CASES = [
    # (area x's path, more config, gateway keys, words in the error; "" means none)
    ("data/areas/x", "", "", ""),  # the default layout: a folder of its own below data
    ("data", "", "", "is or contains the data dir"),
    (".", "", "", "is or contains the data dir"),
    ("data/audit", "", "", "(audit.journal)"),
    ("data/audit/x", "", "", "(audit.journal)"),
    ("data/relay/plc", "", "", "relay state"),
    ("keys", "", 'host_keys = ["keys/host_ed25519"]', "(gateway.host_keys[0])"),
    (
        "secrets",
        '[devices.plc]\nzone = "b"\naddress = "10.0.1.9:22"\nuser = "u"\n'
        'identity = "secrets/plc"\nhost_key = "ssh-ed25519 AAAA"',
        "",
        "(devices.plc.identity)",
    ),
    ("shared", '[areas.y]\nzone = "b"\npath = "shared/inner"', "", "zones 'a' and 'b'"),
    ("shared/inner", '[areas.y]\nzone = "b"\npath = "shared"', "", "zones 'a' and 'b'"),
    ("same", '[areas.y]\nzone = "b"\npath = "same"', "", "zones 'a' and 'b'"),
]


@pytest.mark.parametrize(("x", "more", "gateway", "words"), CASES)
def test_area_layout(tmp_path: Path, x: str, more: str, gateway: str, words: str) -> None:
    found = problems(tmp_path, x, more, gateway)
    if not words:
        assert found == []
        return
    assert any(words in p and "areas." in p and ".path" in p for p in found), found


def test_nested_areas_of_one_zone_warn(tmp_path: Path) -> None:
    text = HEAD.format(x="shared", more='[areas.y]\nzone = "a"\npath = "shared/y"', gateway="")
    found = check(parse(text, source=tmp_path / "conduit.toml"), text)
    assert not errors(found)
    assert any("areas.y lies inside areas.x" in p.message for p in found)


def test_a_link_cannot_hide_the_overlap(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "innocent")
    assert any("data dir" in p for p in problems(tmp_path, "innocent"))


def test_check_command_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "conduit.toml"
    config.write_text(HEAD.format(x="data", more="", gateway=""))
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "areas.x.path" in out and "gateway.data_dir" in out and "not usable" in out
