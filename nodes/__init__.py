"""FDTA node modules, loaded one by one so that one broken optional dependency disables only its nodes.

Each module in :data:`NODE_MODULES` exposes ``NODES``: a list of ``io.ComfyNode`` classes. A module
that fails to import is reported once, in one aggregated log block that says which nodes are missing
and why (usually a package to install), and the others still load.
"""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger("FDTA")

#: One module per pipeline area (kept in pipeline order; the order is the menu order).
NODE_MODULES: tuple[str, ...] = (
    "nodes_prompts",
    "nodes_controls",
    "nodes_acg",
    "nodes_faces",
    "nodes_stg",
    "nodes_age",
    "nodes_dataset",
    "nodes_train",
)

#: Filled by :func:`load_node_classes`: module name -> error text, for the log and for tests.
IMPORT_ERRORS: dict[str, str] = {}


def load_node_classes() -> list[type[io.ComfyNode]]:
    classes: list[type[io.ComfyNode]] = []
    IMPORT_ERRORS.clear()
    for name in NODE_MODULES:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except Exception as exc:  # noqa: BLE001 - reported below, never hidden
            IMPORT_ERRORS[name] = f"{type(exc).__name__}: {exc}"
            continue
        classes.extend(module.NODES)
    if IMPORT_ERRORS:
        lines = "\n".join(f"  - nodes/{k}.py: {v}" for k, v in IMPORT_ERRORS.items())
        log.error(
            "[FDTA] %d node module(s) could not be loaded; their nodes are unavailable:\n%s\n"
            "  Install the missing package(s) into ComfyUI's Python (pip install -r requirements.txt).",
            len(IMPORT_ERRORS),
            lines,
        )
    log.info("[FDTA] loaded %d nodes from %d module(s)", len(classes), len(NODE_MODULES) - len(IMPORT_ERRORS))
    return classes


def warn_onnxruntime_conflict() -> None:
    """One clear warning at load when onnxruntime and onnxruntime-gpu are both installed (they share files,
    so the face nodes may fail in confusing ways later); it says which to uninstall."""
    try:
        from ..fdta_core.faces.providers import onnxruntime_conflict
    except Exception:  # noqa: BLE001 - the faces module's own import error is reported with its nodes
        return
    message = onnxruntime_conflict()
    if message:
        log.warning(message)


class FDTAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.64 does not call on_load(); folders are registered here, before any node runs.
        from ._common import register_model_folders
        from ._server import register_routes
        from ._validation import register_prompt_handler

        register_model_folders()
        register_prompt_handler()  # queue-time validation sees the whole prompt
        register_routes()  # /fdta/... for the frontend extension (web/js)
        warn_onnxruntime_conflict()
        return load_node_classes()
