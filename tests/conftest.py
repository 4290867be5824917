"""Shared fixtures. Tests build their own tiny models and data; reference vectors come from
``../shared/testdata`` when it exists (a developer checkout or CI) and tests that need them skip otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = Path(os.environ.get("FDTA_SHARED_TESTDATA", REPO.parent / "shared" / "testdata"))


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    """``../shared/testdata`` (reference outputs of MXNet, DCFace, arcface_torch, SAM)."""
    if not SHARED_TESTDATA.is_dir():
        pytest.skip(f"reference vectors not found at {SHARED_TESTDATA} (a user's clone has no ../shared)")
    return SHARED_TESTDATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


COMFY_TESTS = REPO / "tests" / "comfy"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under ``tests/comfy/`` drives a real ComfyUI: mark it ``comfy`` so that a quick inner loop
    (``-m "not comfy and not slow"``) exists. CI runs everything."""
    for item in items:
        if COMFY_TESTS in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.comfy)
