"""Fixtures that run FDTA's nodes inside a real ComfyUI server (CPU).

Everything here skips, saying why, when ``COMFYUI_DIR`` does not point at a ComfyUI checkout with a
usable interpreter (``$COMFYUI_DIR/.venv/bin/python`` or ``COMFYUI_PYTHON``). One server is started per
test session; tests add models to ``comfy.models`` at any time (ComfyUI rescans folders on use).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.comfy.harness import ComfyServer, comfy_checkout


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    root, python, reason = comfy_checkout()
    if root is None:
        pytest.skip(reason)
    server = ComfyServer(root, python, tmp_path_factory.mktemp("comfy_base"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
