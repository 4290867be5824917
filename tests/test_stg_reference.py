"""The STG mixer against DCFace's own outputs on the tiny 5x5 configuration (../shared/testdata/dcface)."""

from __future__ import annotations

import pytest
import torch

from fdta_core.stg.checkpoint import build_model, load_stg_weights
from fdta_core.stg.ddim import BatchNoise, Schedule, ddim_sample, ddim_timesteps
from fdta_core.testing.stg import tiny_config

FWD = dict(atol=1e-5, rtol=1e-5)
SAMPLED = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def ref(shared_testdata):
    from safetensors.torch import load_file

    d = shared_testdata / "dcface"
    weights = load_stg_weights(d / "tiny_5x5.safetensors", config=tiny_config())
    model = build_model(weights)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return model, weights, load_file(str(d / "tiny_5x5_vectors.safetensors"))


def test_keys_classified(ref):
    _, weights, _ = ref
    r = weights.report
    assert r.unet_from == "ema_model.averaged_model."
    assert not r.missing and not r.shape_mismatch and not r.unexpected
    assert set(r.skipped) == {"model.", "recognition_model.center.", "recognition_model_eval."}


@torch.no_grad()
def test_style_tokens_and_id_condition(ref):
    model, _, v = ref
    torch.testing.assert_close(model.style_map(v["style_image"]), v["style_spatial"], **FWD)
    torch.testing.assert_close(model.style_tokens(v["style_image"]), v["style_tokens"], **FWD)
    feat, spatial = model.style_backbone.forward_features(v["style_image"], 2)
    torch.testing.assert_close(feat, v["style_backbone_feature"], **FWD)
    feat, spatial = model.id_encoder.backbone.forward_features(v["id_image"], 21)
    torch.testing.assert_close(feat, v["id_backbone_feature"], **FWD)
    torch.testing.assert_close(spatial, v["id_backbone_spatial"], **FWD)
    vec, tokens = model.id_encoder(v["id_image"])
    torch.testing.assert_close(vec, v["id_vector"], **FWD)
    torch.testing.assert_close(tokens, v["id_tokens"], **FWD)
    cond = model.condition(v["id_image"], v["style_image"])
    torch.testing.assert_close(cond.context, v["cross_attn"], **FWD)


@torch.no_grad()
def test_denoiser_output(ref):
    model, _, v = ref
    cond = model.condition(v["id_image"], v["style_image"])
    out = model.denoise(v["unet_x_t"], v["unet_t"], cond)
    torch.testing.assert_close(out, v["unet_out_ema"], **FWD)


def test_schedule_and_timesteps(ref):
    _, _, v = ref
    s = Schedule.dcface()
    assert torch.equal(torch.from_numpy(s.betas), v["betas"])
    assert torch.equal(torch.from_numpy(s.alphas_cumprod), v["alphas_cumprod"])
    assert ddim_timesteps(3) == v["ddim3_timesteps"].tolist()
    assert ddim_timesteps(50) == v["ddim50_timesteps"].tolist()


@torch.no_grad()
def test_ddim3_steps(ref):
    model, _, v = ref
    cond = model.condition(v["id_image"], v["style_image"])
    record = []
    gen = torch.Generator().manual_seed(int(v["ddim3_seed"]))
    x = ddim_sample(lambda x, t: model.eps(x, t, cond), 2, BatchNoise(gen), steps=3, eta=1.0, record=record)
    assert [r.t for r in record] == [666, 333, 0]
    for i, r in enumerate(record):
        assert torch.equal(r.noise, v[f"ddim3_noise_{i + 1}"])
        torch.testing.assert_close(r.eps, v[f"ddim3_eps_{i}"], **SAMPLED)
        torch.testing.assert_close(r.pred_x0, v[f"ddim3_pred_x0_{i}"], **SAMPLED)
        torch.testing.assert_close(r.x, v[f"ddim3_x_{i}"], **SAMPLED)
    torch.testing.assert_close((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1), v["ddim3_images"], **SAMPLED)


@pytest.mark.slow
@torch.no_grad()
def test_ddim50_images(ref):
    model, _, v = ref
    cond = model.condition(v["id_image"], v["style_image"])
    gen = torch.Generator().manual_seed(int(v["ddim50_seed"]))
    x = ddim_sample(lambda x, t: model.eps(x, t, cond), 2, BatchNoise(gen), steps=50, eta=1.0)
    torch.testing.assert_close((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1), v["ddim50_images"], **SAMPLED)
