"""A real area on disk with a zoo of symbolic links around it.

Layout under ``tmp_path``::

    outside/secret.txt           what every escape tries to reach
    outside/dir/
    area/                        the backend's root
      top.txt
      docs/readme.txt
      docs/sub/deep.txt
      docs/parent -> ..          inside: back to the root
      docs/up_file -> ../top.txt
      docs/out_up -> ../../outside/secret.txt
      in_file -> docs/readme.txt
      in_dir -> docs
      root_link -> .
      chain1 -> chain2 -> docs/readme.txt
      chain_out1 -> chain_out2 -> ../outside/secret.txt
      out_rel -> ../outside/secret.txt
      out_dangling -> ../outside/nope
      out_deep -> docs/../../outside/secret.txt
      out_dir -> ../outside
      out_abs -> /etc/passwd
      out_abs_inside -> <absolute path of area>/top.txt
      dev_null -> /dev/null
      loop_a -> loop_b -> loop_a
      self_loop -> self_loop
      dangling_in -> docs/nothing
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conduit.storage import LocalBackend

SECRET = b"SECRET: outside the area\n"
OUTSIDE_MTIME = 123456.0

LINKS: dict[str, str] = {
    "docs/parent": "..",
    "docs/up_file": "../top.txt",
    "docs/out_up": "../../outside/secret.txt",
    "in_file": "docs/readme.txt",
    "in_dir": "docs",
    "root_link": ".",
    "chain1": "chain2",
    "chain2": "docs/readme.txt",
    "chain_out1": "chain_out2",
    "chain_out2": "../outside/secret.txt",
    "out_rel": "../outside/secret.txt",
    "out_dangling": "../outside/nope",
    "out_deep": "docs/../../outside/secret.txt",
    "out_dir": "../outside",
    "out_abs": "/etc/passwd",
    "dev_null": "/dev/null",
    "loop_a": "loop_b",
    "loop_b": "loop_a",
    "self_loop": "self_loop",
    "dangling_in": "docs/nothing",
}


def build_tree(base: Path) -> Path:
    """Create the layout above under ``base`` and return the area root."""
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    area = base / "area"
    (area / "docs" / "sub").mkdir(parents=True)
    (area / "top.txt").write_bytes(b"top\n")
    (area / "docs" / "readme.txt").write_bytes(b"readme\n")
    (area / "docs" / "sub" / "deep.txt").write_bytes(b"deep\n")
    for link, target in LINKS.items():
        os.symlink(target, area / link)
    os.symlink(str(area / "top.txt"), area / "out_abs_inside")
    for path in (outside / "secret.txt", outside / "dir", outside):
        os.utime(path, (OUTSIDE_MTIME, OUTSIDE_MTIME))
    return area


@pytest.fixture
def area(tmp_path: Path) -> Path:
    return build_tree(tmp_path)


@pytest.fixture
async def backend(area: Path) -> AsyncIterator[LocalBackend]:
    local = LocalBackend("test", area)
    yield local
    await local.close()
