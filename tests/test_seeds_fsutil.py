from __future__ import annotations

import os

import pytest

from fdta_core.errors import InputError
from fdta_core.fsutil import atomic_open, atomic_write_text, resolve_inside
from fdta_core.seeds import SEED_MAX, derive_seed, numpy_rng, torch_generator


def test_derive_seed_is_stable_and_separating():
    a = derive_seed(42, "acg", 7, 0)
    assert a == derive_seed(42, "acg", 7, 0)
    assert 0 <= a <= SEED_MAX
    others = {
        derive_seed(43, "acg", 7, 0),
        derive_seed(42, "acg", 7, 1),
        derive_seed(42, "stg", 7, 0),
        derive_seed(42, "acg7", 0),
        derive_seed(42, "acg", 70),
    }
    assert a not in others and len(others) == 5
    with pytest.raises(TypeError):
        derive_seed(1, 1.5)  # type: ignore[arg-type]


def test_generators_follow_the_seed():
    assert numpy_rng(1, "x").integers(1 << 30) == numpy_rng(1, "x").integers(1 << 30)
    import torch

    assert torch.equal(
        torch.rand(3, generator=torch_generator(1, "y")), torch.rand(3, generator=torch_generator(1, "y"))
    )


def test_atomic_open_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as f:
            f.write("new half")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["m.json"]


def test_resolve_inside_refuses_escapes(tmp_path):
    root = tmp_path / "output"
    root.mkdir()
    assert resolve_inside("fdta/set1", [root]) == (root / "fdta" / "set1").resolve()
    assert resolve_inside(str(root / "x"), [root]) == (root / "x").resolve()
    for bad in ("../evil", "a/../../evil", str(tmp_path / "elsewhere"), "", "/etc"):
        with pytest.raises(InputError):
            resolve_inside(bad, [root], where="FDTADatasetWriter.name")
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InputError, match="outside"):
        resolve_inside("link/x", [root])
