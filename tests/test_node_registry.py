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


def _widget_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            yield name, node


#: A tooltip may start with a choice's name in lower case ("none: ...", "range mode: ...").
_CHOICE_PREFIX = r"^[a-z0-9_]+( mode)?:"


def test_one_widget_vocabulary_and_sentence_tooltips():
    """The same concept has the same widget on every node (issue 19): precision (never dtype), device,
    model_name for a loader's file, batch_size, seed through nodes/_common.py; every literal tooltip is a
    sentence (capital first unless it names a choice, full stop or closing bracket last)."""
    import re

    for path in sorted(NODES_DIR.glob("nodes_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, call in _widget_calls(tree):
            first = call.args[0] if call.args and isinstance(call.args[0], ast.Constant) else None
            widget = first.value if first is not None else None
            if name.startswith("io.") and name.endswith(".Input"):
                assert widget not in ("dtype", "checkpoint"), f"{path.name}: use precision / model_name"
                # the shared builders own these widgets
                assert widget not in ("seed", "precision", "device"), (
                    f"{path.name}: '{widget}' comes from nodes/_common.py ({widget}_input)"
                )
            for kw in call.keywords:
                if (
                    kw.arg == "tooltip"
                    and isinstance(kw.value, ast.Constant)
                    and isinstance(kw.value.value, str)
                ):
                    text = kw.value.value
                    where = f"{path.name}:{kw.value.lineno} {text[:50]!r}"
                    assert text[-1] in ".!?)", f"{where}: end the tooltip with a full stop"
                    assert (
                        not re.match(r"^[a-z]", text)
                        or re.match(_CHOICE_PREFIX, text)
                        or not re.match(r"^[a-z]+ ", text)
                    ), f"{where}: start the tooltip with a capital"


def test_every_node_is_an_fdta_node_with_a_queue_time_check():
    """Every node class derives ``FDTANode`` and defines ``validate_inputs`` (ComfyUI's V3 queue-time
    hook, which 0.3.64 needs for combo values): a node without it lets a bogus widget value through to
    fail mid-run (nodes/_validation.py says why)."""
    for path in sorted(NODES_DIR.glob("nodes_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            declares_node = any(isinstance(k, ast.keyword) and k.arg == "node_id" for k in ast.walk(cls))
            if not declares_node:
                continue
            bases = [ast.unparse(b) for b in cls.bases]
            assert bases == ["FDTANode"], f"{path.name}: {cls.name} derives {bases}, not FDTANode"
            methods = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
            assert "validate_inputs" in methods, f"{path.name}: {cls.name} has no validate_inputs"
