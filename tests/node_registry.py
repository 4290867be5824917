"""Node ids declared in ``nodes/*.py``, read statically (no ComfyUI import), for registry tests."""

from __future__ import annotations

import ast
from pathlib import Path

NODES_DIR = Path(__file__).resolve().parents[1] / "nodes"


def declared_node_ids() -> list[str]:
    ids: list[str] = []
    for path in sorted(NODES_DIR.glob("nodes_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "node_id"
                and isinstance(node.value, ast.Constant)
            ):
                ids.append(str(node.value.value))
    return ids
