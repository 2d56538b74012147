"""``conduit inventory``: check a TOML inventory, or import an Ansible one.

``import FILE`` reads an Ansible INI or YAML inventory (see
:mod:`conduit.client.ansible`) and prints the Conduit TOML inventory on
stdout, so it can be reviewed before it is saved (host keys are not in
Ansible inventories: add ``host_key`` pins or rely on ``known_hosts``).
``list FILE [TARGET...]`` loads an inventory as the fleet would and prints
the devices the targets select, or every fault with its file, line and key.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from conduit.cli.main import CommandError
from conduit.client.ansible import read
from conduit.client.errors import ClientError, shown
from conduit.client.export import to_toml
from conduit.client.inventory import load
from conduit.names import escape


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inventory",
        help="check a device inventory, or import an Ansible inventory",
        description="Work with the TOML device inventory that `conduit fleet` uses.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imported = actions.add_parser(
        "import",
        help="print an Ansible INI or YAML inventory as a Conduit TOML inventory",
        description="Read an Ansible inventory (INI or YAML: groups, children, ansible_host, "
        "ansible_port, ansible_user, ansible_ssh_private_key_file) and print it as TOML.",
    )
    imported.add_argument("file", type=Path, metavar="FILE")
    imported.add_argument(
        "--format", choices=["ini", "yaml"], help="default: yaml for .yml/.yaml, else ini"
    )
    imported.set_defaults(handler=run_import)
    listed = actions.add_parser(
        "list",
        help="check an inventory and list the devices TARGETs select (default: all)",
        description="Load a TOML inventory; print each selected device, or every fault.",
    )
    listed.add_argument("file", type=Path, metavar="FILE")
    listed.add_argument("targets", nargs="*", metavar="TARGET", help="devices, groups or all")
    listed.set_defaults(handler=run_list)


def run_import(args: argparse.Namespace) -> int:
    try:
        text = to_toml(read(args.file, args.format), str(args.file))
    except ClientError as exc:
        raise CommandError(shown(exc), code=1) from None
    print(text, end="")
    return 0


def run_list(args: argparse.Namespace) -> int:
    try:
        devices = load(args.file).select(args.targets or ["all"])
    except ClientError as exc:
        raise CommandError(shown(exc), code=1) from None
    for device in devices:
        endpoint = device.endpoint
        groups = ",".join(device.groups) or "-"
        print(
            escape(
                f"{device.name}  {endpoint.label()}  {device.protocol}  groups={groups}  "
                f"key={'pinned' if endpoint.host_key else 'known_hosts'}"
            )
        )
    return 0
