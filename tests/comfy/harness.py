"""A real ComfyUI server for acceptance tests, isolated in a temporary base directory.

The implementation lives in :mod:`fdta_core.comfy_server` (``fdta demo`` starts its server the same
way); this module keeps the names the tests import. Manual use: ``python tests/comfy/harness.py BASE_DIR``
serves until Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fdta_core.comfy_server import (  # noqa: E402  (re-exported for the tests)
    PACK_NAME,
    ComfyServer,
    PromptFailed,
    comfy_checkout,
    copy_into,
    free_port,
    node_outputs,
)

REPO = Path(__file__).resolve().parents[2]


def comfy_or_skip() -> tuple[Path, Path]:
    """``(comfyui_dir, python)`` for a test, else skip saying why, or fail under ``FDTA_REQUIRE_COMFYUI=1``
    (``.ci/run`` sets it: in CI a live test that skips proves nothing)."""
    import pytest

    root, python, reason = comfy_checkout()
    if root is None or python is None:
        if os.environ.get("FDTA_REQUIRE_COMFYUI") == "1":
            pytest.fail(f"FDTA_REQUIRE_COMFYUI=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return root, python


__all__ = [
    "PACK_NAME",
    "REPO",
    "ComfyServer",
    "PromptFailed",
    "comfy_checkout",
    "comfy_or_skip",
    "copy_into",
    "free_port",
    "node_outputs",
]


if __name__ == "__main__":
    root, python, reason = comfy_checkout()
    if root is None:
        sys.exit(reason)
    srv = ComfyServer(
        root, python, Path(sys.argv[1]).resolve(), port=int(os.environ.get("COMFY_PORT", "8188"))
    )
    srv.start()
    print(f"ComfyUI at {srv.url} (log {srv.log_path}); Ctrl-C stops it")
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        srv.stop()
