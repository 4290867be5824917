"""Fixtures that run FDTA's nodes inside a real ComfyUI server (CPU).

Everything here skips, saying why, when ``COMFYUI_DIR`` does not point at a ComfyUI checkout with a
usable interpreter (``$COMFYUI_DIR/.venv/bin/python`` or ``COMFYUI_PYTHON``), and fails instead when
``FDTA_REQUIRE_COMFYUI=1`` (as ``.ci/run`` sets it). One server is started per
test session; tests add models to ``comfy.models`` at any time (ComfyUI rescans folders on use).

The server also gets
* an ``extra_model_paths.yaml`` registering ``<base>/extra_models/insightface`` and
  ``<base>/extra_models/fdta_age`` (empty until a test writes there; :data:`EXTRA_MODELS`), so tests can
  check that folders registered that way are honoured without a second server;
* a per-session random fake API key in the environment variable :data:`LIVE_KEY_ENV`, so the LLM node
  can be driven through ``api_key_env`` and tests can check that the key leaks nowhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.comfy.harness import ComfyServer, comfy_or_skip

#: Environment variable of the server that holds a fake API key (value: ``comfy.env[LIVE_KEY_ENV]``).
LIVE_KEY_ENV = "FDTA_LIVE_TEST_KEY"
#: Folder (relative to the server's base directory) registered through extra_model_paths.yaml.
EXTRA_MODELS = "extra_models"


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    root, python = comfy_or_skip()
    base = tmp_path_factory.mktemp("comfy_base")
    extra = base / EXTRA_MODELS
    (extra / "insightface").mkdir(parents=True)
    (extra / "fdta_age").mkdir(parents=True)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"fdta_tests:\n  base_path: {extra}\n  insightface: insightface\n  fdta_age: fdta_age\n")
    server = ComfyServer(
        root,
        python,
        base,
        extra_args=["--extra-model-paths-config", str(yaml)],
        env={LIVE_KEY_ENV: "sk-live-" + secrets.token_hex(16)},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
