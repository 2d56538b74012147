"""The package's import graph: no cycles, and dependencies point one way.

Layers, from the bottom: ``errors``/``names``/``scpcodec`` (vocabulary), ``config`` (a
leaf: reading the file) and ``state`` (the durable SQLite store), ``policy``,
``audit``, ``auth`` and ``inspect``, ``storage``, ``transfer``, ``site``
(checking and building a whole site), ``gateway``, ``client`` (the SSH client
side), ``cli``. A
module may import its own layer and the ones below it, never one above: the
policy engine must not know the gateway exists. Imports under
``if TYPE_CHECKING:`` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "conduit"

#: What each top-level part may import (besides itself and the vocabulary).
ALLOWED: dict[str, set[str]] = {
    "_asyncssh": set(),  # asyncssh's private API: imports nothing of ours
    "config": set(),
    "state": set(),  # one SQLite file: knows nothing of the policy
    "policy": {"config"},
    "audit": {"config"},
    "auth": {"config", "state"},  # keys, certificates, second factor, defender
    "inspect": {"config", "state"},  # checks, quarantine, approvals
    "storage": {"config", "audit"},
    "transfer": {"config", "audit", "storage"},
    "site": {"config", "policy", "auth", "storage", "inspect"},  # inspect: trust anchors checked
    "gateway": {
        "_asyncssh",
        "config",
        "state",
        "policy",
        "audit",
        "auth",
        "inspect",
        "storage",
        "transfer",
        "site",
    },
    "client": {"_asyncssh", "config"},  # the client side: never the gateway's parts
    "cli": {
        "config",
        "state",
        "policy",
        "audit",
        "auth",
        "inspect",
        "storage",
        "transfer",
        "site",
        "gateway",
        "client",
    },
}
VOCABULARY = {"errors", "names", "scpcodec", "__init__"}
#: Known exceptions to the layers, each with its reason (none today).
KNOWN: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """``conduit.*`` modules ``path`` imports when it runs (``from pkg import
    mod`` counts as importing ``pkg.mod``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("conduit"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("conduit"):
                assert node.module is not None
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(tree.body)
    return found


FILES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: runtime_imports(path, set(FILES)) for name, path in FILES.items()}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module: str) -> None:
    mine = part(module)
    if mine == "__main__":
        allowed = VOCABULARY | {"cli"}
    elif mine in VOCABULARY:
        allowed = VOCABULARY
    else:
        allowed = {mine} | ALLOWED[mine] | VOCABULARY
    upward = sorted(
        i
        for i in GRAPH[module]
        if i != "conduit" and part(i) not in allowed and (module, part(i)) not in KNOWN
    )
    assert not upward, f"{module} imports {upward}, above its layer"


def test_no_import_cycles() -> None:
    """Walk the module graph; a module reached again on the current path is a cycle."""

    def resolve(name: str) -> str | None:
        # `from conduit.policy import x` names the package; both are nodes.
        return name if name in GRAPH else None

    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(filter(None, map(resolve, GRAPH[node]))):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            walk(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
