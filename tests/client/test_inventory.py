"""The TOML inventory and the Ansible import: bad lines first, then what they select."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from conduit.cli.main import main
from conduit.client import Client
from conduit.client.ansible import AnsibleError, expand, read
from conduit.client.export import to_toml
from conduit.client.inventory import InventoryError, load

from .conftest import Devices

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

GOOD = f"""
[defaults]
user = "ops"
identity = "keys/fleet"
vars = {{ site = "north", tier = 1 }}

[groups.substations]
children = ["substation-a", "substation-b"]
vars = {{ tier = 2 }}

[devices.rtu-01]
address = "10.20.1.11:2222"
host_key = "{KEY}"
groups = ["substation-a"]
protocol = "sftp"
vars = {{ slot = 3 }}

[devices.rtu-02]
address = "10.20.1.12"
user = "maint"
known_hosts = "known_hosts"
groups = ["substation-b"]
protocol = "scp"
remote_hash = "sha256sum"
crypto = {{ ciphers = "+aes256-cbc" }}

[devices.hmi-01]
address = "[fd00::5]:22"
"""


def write(tmp_path: Path, text: str, name: str = "inventory.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[devices.a]\naddress = "h"\nhost_kye = "x"\n', "line 3: devices.a.host_kye: unknown key"),
        ('[devices.a]\naddress = "h"\nhost_key = "ssh-ed25519 nope"\n',
         "line 3: devices.a.host_key: not a public key"),
        ('[devices.a]\naddress = "h:99999"\n', "line 2: devices.a.address: "),
        ('[devices.a]\naddress = "ops@h"\n', "line 2: devices.a.address: a host, host:port"),
        ('[devices.a]\naddress = "h"\nscp_rename = "mv {old}"\n', "use {old} and {new}"),
        ('[devices.a]\naddress = "h:22"\nport = 23\n', "line 3: devices.a.port: differs"),
        ('[devices.a]\naddress = "h"\nprotocol = "ftp"\n', "line 3: devices.a.protocol: "),
        ('[devices.a]\naddress = "h"\ngroups = ["a"]\n', "devices.a: is also a group name"),
        ('[groups.g]\nchildren = ["nope"]\n', "line 2: groups.g.children: no group 'nope'"),
        ('[devices."a\\u0007"]\naddress = "h"\n', "bad name"),
        ("[devices.a]\naddress = \n", "not valid TOML"),
        ('[defaults]\nusr = "ops"\n', "line 2: defaults.usr: unknown key"),
        ('[devices.a]\naddress = "h"\nremote_hash = "md5"\n', "line 3: devices.a.remote_hash: "),
        ('[devices.a]\naddress = "h"\n[devices.a.crypto]\nciphers = "rot13"\n',
         "line 4: devices.a.crypto.ciphers: "),
        ('[devices.a]\nport = 22\n', "devices.a.address: Field required"),
        (f'[devices.a]\naddress = "h"\nhost_key = "{KEY}"\nknown_hosts = "k"\n', "not both"),
    ],
)  # fmt: skip
def test_bad_inventories_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_missing_file_and_unknown_targets(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no such inventory file"):
        load(tmp_path / "absent.toml")
    inventory = load(write(tmp_path, GOOD))
    with pytest.raises(
        InventoryError, match=r"'substation-c' \(did you mean 'substation-[ab]'\?\)"
    ):
        inventory.select(["substation-c"])


def test_defaults_groups_children_and_vars_resolve(tmp_path: Path) -> None:
    inventory = load(write(tmp_path, GOOD))
    rtu1 = inventory.devices["rtu-01"]
    assert rtu1.endpoint.host == "10.20.1.11" and rtu1.endpoint.port == 2222
    assert rtu1.endpoint.user == "ops" and rtu1.endpoint.identity == tmp_path / "keys/fleet"
    assert rtu1.endpoint.host_key == KEY and rtu1.endpoint.known_hosts is None
    assert rtu1.groups == ("substation-a", "substations")
    assert rtu1.vars == {"site": "north", "tier": 2, "slot": 3}
    rtu2 = inventory.devices["rtu-02"]
    assert rtu2.endpoint.user == "maint" and rtu2.protocol == "scp"
    assert rtu2.remote_hash == "sha256sum" and rtu1.remote_hash == "readback"
    assert rtu2.endpoint.crypto is not None and rtu1.endpoint.crypto is None
    assert rtu2.endpoint.known_hosts == tmp_path / "known_hosts"
    assert inventory.devices["hmi-01"].endpoint.host == "fd00::5"
    assert [d.name for d in inventory.select(["substations"])] == ["rtu-01", "rtu-02"]
    assert [d.name for d in inventory.select(["hmi-01", "substation-b"])] == ["rtu-02", "hmi-01"]
    assert len(inventory.select(["all"])) == 3


async def test_an_inventory_device_connects(devices: Devices, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[defaults]\nuser = "root"\nidentity = "{devices.identity}"\n'
        f'[devices.dev]\naddress = "{devices.sftp.address}"\n'
        f'host_key = "{devices.sftp.host_key}"\n',
    )
    [device] = load(path).select(["dev"])
    source = write(tmp_path, "payload", "payload.txt")
    async with Client(device.endpoint, protocol=device.protocol, agent_path=None) as client:
        [sent] = await client.put(source, str(tmp_path / "copied.txt"))
    assert (tmp_path / "copied.txt").read_text() == "payload" and sent.bytes == 7


ANSIBLE_INI = """\
# an Ansible inventory
jump.site ansible_user=admin

[substation_a]
rtu-[01:03].sa.example ansible_user=ops
10.0.0.9:2201 ansible_ssh_private_key_file=keys/old   # legacy box

[substation_a:vars]
ansible_port=2222
firmware="4.2"

[substation_b]
rtu-[a:b].sb.example ansible_host=10.1.0.5 slots="[1, 2]"

[substations:children]
substation_a
substation_b

[all:vars]
ansible_user=nobody
"""

ANSIBLE_YAML = """\
all:
  vars:
    ansible_user: nobody
  hosts:
    jump.site:
      ansible_user: admin
  children:
    substations:
      children:
        substation_a:
          vars:
            ansible_port: 2222
            firmware: "4.2"
          hosts:
            rtu-[01:03].sa.example:
              ansible_user: ops
            10.0.0.9:2201:
              ansible_ssh_private_key_file: keys/old
        substation_b:
          hosts:
            rtu-[a:b].sb.example:
              ansible_host: 10.1.0.5
              slots: [1, 2]
"""


def test_host_patterns_expand_as_ansible_does() -> None:
    assert expand("web[01:03].x") == (["web01.x", "web02.x", "web03.x"], None)
    assert expand("db-[a:c]:2222") == (["db-a", "db-b", "db-c"], 2222)
    assert expand("n[0:6:3]") == (["n0", "n3", "n6"], None)
    assert expand("[fd00::1]:22") == (["fd00::1"], 22)
    assert expand("fd00::1") == (["fd00::1"], None)
    with pytest.raises(ValueError, match="equal length"):
        expand("x[01:100]")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("i.ini", "[g:bogus]\nh\n", "line 1: unknown section kind 'bogus'"),
        ("i.ini", "[g]\nh novalue\n", "line 2: expected key=value host variable"),
        ("i.ini", "[g]\nh\n[g:vars]\njustaword\n", "line 4: expected key=value"),
        ("i.ini", "[g]\nh[3:x]\n", "line 2: bad range"),
        ("i.yml", "all:\n  hostz:\n    h: {}\n", "all.hostz: unknown key"),
        ("i.yml", "all:\n  hosts: [a, b]\n", "all.hosts: must be a mapping"),
        ("i.yml", "all:\n  hosts:\n  - : :\n", "not valid YAML"),
        ("i.ini", "[g]\nh ansible_port=abc\n", "ansible_port 'abc' is not a number"),
    ],
)
def test_bad_ansible_inventories_are_one_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, text, name)
    with pytest.raises(AnsibleError) as caught:
        to_toml(read(path), str(path))
    assert str(caught.value).startswith(str(path)) and expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_ini_and_yaml_import_to_the_same_devices(tmp_path: Path) -> None:
    results = []
    for name, text in (("hosts.ini", ANSIBLE_INI), ("hosts.yml", ANSIBLE_YAML)):
        toml_text = to_toml(read(write(tmp_path, text, name)), name)
        inventory = load(write(tmp_path, toml_text, f"{name}.toml"))
        results.append(
            {
                n: (d.endpoint.label(), d.endpoint.identity, set(d.groups), d.vars)
                for n, d in inventory.devices.items()
            }
        )
        assert [d.name for d in inventory.select(["substations"])] == [
            "rtu-01.sa.example", "rtu-02.sa.example", "rtu-03.sa.example", "10.0.0.9",
            "rtu-a.sb.example", "rtu-b.sb.example",
        ]  # fmt: skip
    ini, yml = results
    assert ini == yml
    assert ini["jump.site"][0] == "admin@jump.site"
    assert ini["rtu-02.sa.example"][0] == "ops@rtu-02.sa.example:2222"
    assert ini["rtu-02.sa.example"][3] == {"firmware": "4.2"}
    assert ini["10.0.0.9"][0] == "nobody@10.0.0.9:2201"  # the host's port beats the group's
    assert ini["10.0.0.9"][1] == tmp_path / "keys/old"
    assert ini["rtu-a.sb.example"][0] == "nobody@10.1.0.5"
    assert ini["rtu-a.sb.example"][3] == {"slots": [1, 2]}


def test_cli_import_prints_toml_and_list_checks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, ANSIBLE_INI, "hosts")
    assert main(["inventory", "import", str(source)]) == 0
    text = capsys.readouterr().out
    assert tomllib.loads(text)["devices"]["rtu-a.sb.example"]["address"] == "10.1.0.5"
    inventory = write(tmp_path, text)
    assert main(["inventory", "list", str(inventory), "substation_b"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "rtu-a.sb.example  nobody@10.1.0.5  auto  groups=substation_b,substations  key=known_hosts",
        "rtu-b.sb.example  nobody@10.1.0.5  auto  groups=substation_b,substations  key=known_hosts",
    ]
    assert main(["inventory", "list", str(inventory), "nope"]) == 1
    assert "no device or group 'nope'" in capsys.readouterr().err
    assert main(["inventory", "import", str(tmp_path / "absent.ini")]) == 1
    assert "absent.ini: no such file" in capsys.readouterr().err
