"""``eval`` is a leaf: no module of ``fdta_core.eval`` imports ``fdta_core.train``, not even inside a
function (train may import eval; the reverse made a cycle). Checked on the source (AST), so a lazy import
cannot hide."""

from __future__ import annotations

import ast
from pathlib import Path

import fdta_core

CORE = Path(fdta_core.__file__).resolve().parent


def _imported_modules(source: str, package: str) -> list[str]:
    """Absolute dotted names of every module a module of ``package`` imports, at any depth."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def _train_imports(source: str, package: str = "fdta_core.eval") -> list[str]:
    return [
        m
        for m in _imported_modules(source, package)
        if m == "fdta_core.train" or m.startswith("fdta_core.train.")
    ]


def test_eval_never_imports_train():
    offenders = {}
    for p in sorted((CORE / "eval").rglob("*.py")):
        package = ".".join(p.relative_to(CORE.parent).parts[:-1])
        if bad := _train_imports(p.read_text(encoding="utf-8"), package):
            offenders[str(p.relative_to(CORE))] = bad
    assert offenders == {}


def test_the_check_sees_function_local_and_relative_imports():
    src = "def f():\n    from ..train.data import RecFaceDataset\n    from .. import train\n    import fdta_core.train\n"
    assert _train_imports(src) == [
        "fdta_core.train.data",
        "fdta_core.train.data.RecFaceDataset",
        "fdta_core.train",
        "fdta_core.train",
    ]
    assert _train_imports("from .verification import verify\nfrom ..faces import providers\n") == []
