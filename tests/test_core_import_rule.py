"""``fdta_core`` never imports ComfyUI (DESIGN section 3): every module, every import statement, including
imports inside functions and ``from comfy.x import y``, checked on the parsed source so that a lazy import
on a path no other test runs is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "fdta_core"
#: Top-level packages that belong to ComfyUI (or to the pack's ComfyUI glue, ``nodes``).
FORBIDDEN = frozenset({"comfy", "comfy_api", "folder_paths", "server", "nodes", "execution"})


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """``"line: statement"`` for every import of a forbidden package anywhere in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:  # relative imports stay inside the pack's own packages
            continue
        for name in names:
            if name.split(".")[0] in FORBIDDEN:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_checker_sees_every_form():
    src = (
        "import os\nfrom . import nodes\nfrom ..x import comfy\n"
        "def f():\n    import comfy.model_management as mm\n"
        "    from comfy_api.latest import io\n    import folder_paths, server\n"
        "class C:\n    def g(self):\n        from execution import x\n        import nodes\n"
    )
    assert forbidden_imports(src) == [
        "5: import comfy.model_management as mm",
        "6: from comfy_api.latest import io",
        "7: import folder_paths, server",
        "7: import folder_paths, server",
        "10: from execution import x",
        "11: import nodes",
    ]


def test_fdta_core_never_imports_comfyui():
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 50, f"expected the whole library under {CORE}"
    bad = {
        str(path.relative_to(CORE.parent)): hits
        for path in modules
        if (hits := forbidden_imports(path.read_text(encoding="utf-8"), str(path)))
    }
    assert not bad, f"fdta_core must not import ComfyUI (DESIGN section 3): {bad}"
