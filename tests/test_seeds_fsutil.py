from __future__ import annotations

import os

import pytest

from fdta_core.errors import InputError
from fdta_core.fsutil import atomic_open, atomic_write_text, resolve_inside, swap_folder
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


def _folder(path, text):
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def test_swap_folder_puts_new_in_place_and_drops_old(tmp_path):
    final = tmp_path / "out"
    assert swap_folder(_folder(tmp_path / "t1", "one"), final) is False
    assert (final / "f.txt").read_text() == "one" and not (tmp_path / "t1").exists()
    stale = tmp_path / "aside"
    _folder(stale, "stale leftover")
    assert swap_folder(_folder(tmp_path / "t2", "two"), final, old=stale) is True
    assert (final / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "empty").mkdir()
    assert swap_folder(_folder(tmp_path / "t3", "three"), tmp_path / "empty") is False
    assert (tmp_path / "empty" / "f.txt").read_text() == "three"


def test_swap_folder_killed_between_renames_leaves_the_old_copy(tmp_path, monkeypatch):
    final = _folder(tmp_path / "out", "old")
    new = _folder(tmp_path / "new", "new")
    real = os.replace
    calls = []

    def dying_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies after moving the old copy aside
        return real(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        swap_folder(new, final, old=tmp_path / ".old-out")
    assert not final.exists()
    assert (tmp_path / ".old-out" / "f.txt").read_text() == "old"  # recoverable, nothing lost
    assert (new / "f.txt").read_text() == "new"
