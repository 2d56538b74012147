"""``conduit init [DIR]``: a commented starter policy, host key and data folders."""

from __future__ import annotations

import argparse
import getpass
import json
from importlib import resources
from pathlib import Path

from conduit.cli.main import CommandError
from conduit.config import load, local_public_keys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "init",
        help="write a starter conduit.toml, host key and data folders",
        description="Write a commented starter conduit.toml in DIR (default: here), with your "
        "~/.ssh public keys as its first user, a host key and the data folders.",
    )
    parser.add_argument("dir", nargs="?", type=Path, default=Path("."), help="target folder")
    parser.add_argument("--force", action="store_true", help="overwrite an existing conduit.toml")
    parser.set_defaults(handler=run)


def starter_text(user: str, keys: list[str]) -> str:
    template = resources.files("conduit.config").joinpath("starter.toml").read_text("utf-8")
    key_lines = "".join(f"  {json.dumps(k)},\n" for k in keys) or (
        "  # paste an OpenSSH public key here, e.g. from ~/.ssh/id_ed25519.pub\n"
    )
    return template.replace("{user}", json.dumps(user)).replace("{keys}", key_lines)


def run(args: argparse.Namespace) -> int:
    target: Path = args.dir
    path = target / "conduit.toml"
    if path.exists() and not args.force:
        raise CommandError(f"{path} already exists (use --force to overwrite)", code=1)
    target.mkdir(parents=True, exist_ok=True)
    path.write_text(starter_text(getpass.getuser(), local_public_keys()), encoding="utf-8")
    config = load(path)
    from conduit.gateway.hostkey import load_host_key

    data = config.gateway.data_dir
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    for area in config.areas.values():
        area.path.mkdir(parents=True, exist_ok=True, mode=0o750)
    key = load_host_key(config)[0]
    print(f"wrote {path}")
    print(f"host key {key.get_fingerprint('sha256')} in {data}")
    print(f"next: conduit check --config {path}  then  conduit serve --config {path}")
    return 0
