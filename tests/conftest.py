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
