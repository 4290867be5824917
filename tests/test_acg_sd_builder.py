"""Random-weight SD 1.5 / ControlNet writer: architecture tables and deterministic files.

Loading the files with ComfyUI's own loaders is checked in tests/comfy/test_acg_graph.py."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from safetensors import safe_open

from fdta_core.testing import sd as S


def n_params(shapes):
    return sum(math.prod(s) for s in shapes.values())


def test_full_size_tables_match_the_published_parameter_counts():
    # SD 1.5 UNet 859,520,964; VAE 83,653,863; CLIP-L text model 123,060,480 (no projection)
    assert n_params(S.unet_shapes(S.FULL)) == 859_520_964
    assert n_params(S.vae_shapes()) == 83_653_863
    assert n_params(S.clip_l_shapes()) == 123_060_480


def test_shallow_unet_has_what_comfyui_detects_as_sd15():
    u = S.unet_shapes(S.SHALLOW)
    assert u["input_blocks.0.0.weight"] == (320, 4, 3, 3)
    assert u["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert len(u["input_blocks.1.1.proj_in.weight"]) == 4  # 1x1 conv, not Linear (SD 2.x)
    assert u["out.2.weight"] == (4, 320, 3, 3)
    assert not any(k.startswith("label_emb") or "time_stack" in k for k in u)
    assert n_params(u) < 30_000_000
    ck = S.sd15_checkpoint_shapes(S.SHALLOW)
    assert {k.split(".")[0] for k in ck} == {"model", "cond_stage_model", "first_stage_model"}


def test_controlnet_matches_its_unet():
    for cfg in (S.SHALLOW, S.FULL):
        c = S.controlnet_shapes(cfg)
        u = S.unet_shapes(cfg)
        enc = {k: v for k, v in u.items() if k.startswith(("input_blocks", "middle_block", "time_embed"))}
        assert all(c[k] == v for k, v in enc.items())
        n_inputs = len({k.split(".")[1] for k in enc if k.startswith("input_blocks")})
        assert len({k.split(".")[1] for k in c if k.startswith("zero_convs")}) == n_inputs
        assert c["input_hint_block.0.weight"] == (16, 3, 3, 3)
        assert c["input_hint_block.14.weight"] == (320, 256, 3, 3)


def test_tensors_are_seeded_and_sensibly_scaled():
    a = S.random_state_dict({"x.weight": (64, 32, 3, 3), "x.bias": (64,), "n.norm.weight": (64,)}, seed=1)
    b = S.random_state_dict({"n.norm.weight": (64,), "x.bias": (64,), "x.weight": (64, 32, 3, 3)}, seed=1)
    c = S.random_state_dict({"x.weight": (64, 32, 3, 3)}, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)  # independent of key order
    assert not torch.equal(a["x.weight"], c["x.weight"])
    assert a["x.weight"].dtype == torch.float16
    assert a["x.weight"].float().std().item() == pytest.approx((32 * 9) ** -0.5, rel=0.1)
    assert a["n.norm.weight"].float().mean().item() == pytest.approx(1.0, abs=0.01)
    assert a["x.bias"].float().abs().max().item() < 0.1


def test_controlnet_file_is_v11_layout_and_deterministic(tmp_path):
    p1 = S.write_controlnet(tmp_path / "a.safetensors", seed=5)
    p2 = S.write_controlnet(tmp_path / "b.safetensors", seed=5)
    p3 = S.write_controlnet(tmp_path / "c.safetensors", seed=6)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (p1, p2, p3)]
    assert digest[0] == digest[1] != digest[2]
    with safe_open(str(p1), "pt") as f:
        keys = list(f.keys())
        assert all(k.startswith("control_model.") for k in keys)
        assert "control_model.zero_convs.0.0.weight" in keys
        t = f.get_tensor("control_model.input_hint_block.0.weight")
        assert t.dtype == torch.float16 and tuple(t.shape) == (16, 3, 3, 3)
        assert torch.isfinite(t.float()).all()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_checkpoint_file_holds_every_key(tmp_path):
    m = S.write_random_sd_models(tmp_path, seed=0)
    try:
        with safe_open(str(m.checkpoint), "pt") as f:
            assert set(f.keys()) == set(S.sd15_checkpoint_shapes(S.SHALLOW))
            w = f.get_tensor("model.diffusion_model.input_blocks.0.0.weight")
            assert tuple(w.shape) == (320, 4, 3, 3) and w.dtype == torch.float16
        assert m.checkpoint.parent.name == "checkpoints" and m.controlnet.parent.name == "controlnet"
        assert 0.40e9 < m.checkpoint.stat().st_size < 0.50e9
    finally:
        m.checkpoint.unlink()
        m.controlnet.unlink()
