"""Node ids never change once shipped (a renamed id breaks every saved workflow)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.node_registry import NODES_DIR, declared_node_ids

SHIPPED = Path(__file__).with_name("shipped_node_ids.txt")


def test_node_ids_are_fdta_prefixed_and_unique():
    ids = declared_node_ids()
    assert all(i.startswith("FDTA") for i in ids), ids
    assert len(ids) == len(set(ids)), ids


def test_shipped_node_ids_still_exist():
    shipped = [
        line.strip() for line in SHIPPED.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    missing = sorted(set(shipped) - set(declared_node_ids()))
    assert not missing, f"shipped node ids disappeared (never rename a node id): {missing}"


def test_node_modules_are_listed_and_never_import_core_comfy_names_bare():
    init = (NODES_DIR / "__init__.py").read_text()
    listed = ast.literal_eval(init.split("NODE_MODULES: tuple[str, ...] = ", 1)[1].split(")", 1)[0] + ")")
    files = sorted(p.stem for p in NODES_DIR.glob("nodes_*.py"))
    assert sorted(listed) == files, "every nodes/nodes_*.py must be listed in NODE_MODULES (and only those)"
    for path in NODES_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name in ("utils", "nodes") for a in node.names), path
