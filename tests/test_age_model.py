"""SAM re-implementation against the reference vectors of ../shared/testdata/sam and the full layout."""

from __future__ import annotations

import json

import pytest
import torch

from fdta_core.age.loading import check_layout, infer_config
from fdta_core.age.model import SAM, SAMConfig
from fdta_core.age.ops import fused_leaky_relu, make_kernel, upfirdn2d
from fdta_core.errors import ModelFormatError
from fdta_core.testing.age import TINY_CONFIG


@pytest.fixture(scope="module")
def sam_dir(shared_testdata):
    d = shared_testdata / "sam"
    if not (d / "tiny.safetensors").is_file():
        pytest.skip(f"SAM reference vectors not found in {d}")
    return d


@pytest.fixture(scope="module")
def reference(sam_dir):
    from safetensors.torch import load_file

    weights = load_file(str(sam_dir / "tiny.safetensors"))
    vectors = load_file(str(sam_dir / "tiny_vectors.safetensors"))
    model = SAM(TINY_CONFIG)
    model.load_state_dict(weights, strict=True)
    dbg: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        x = model.add_age_channel(vectors["input_rgb"], vectors["target_ages"])
        codes = model.encode(x, debug=dbg)
        image = model.decode(codes, debug=dbg)
        pooled = model.decode(codes, resize=True)
    return model, weights, vectors, x, codes, image, pooled, dbg


def test_tiny_config_matches_reference_config(sam_dir, reference):
    cfg = json.loads((sam_dir / "tiny_config.json").read_text())
    assert TINY_CONFIG.n_styles == cfg["n_styles"]["value"]
    assert TINY_CONFIG.output_size == cfg["pSp_opts"]["output_size"]
    assert TINY_CONFIG.style_dim == cfg["decoder"]["style_dim"]
    assert {int(k): v for k, v in cfg["decoder"]["channels_used"].items()} == TINY_CONFIG.decoder_channels
    assert TINY_CONFIG.se_reduction == cfg["encoder"]["se_reduction"]["value"]
    # The loader infers the same configuration from tensor shapes alone.
    assert infer_config(reference[1]) == TINY_CONFIG


def test_encoder_input_and_codes(reference):
    _, _, v, x, codes, _, _, dbg = reference
    torch.testing.assert_close(x, v["encoder_input"], atol=0, rtol=0)
    torch.testing.assert_close(dbg["codes_encoder"], v["codes_encoder"], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        dbg["codes_pretrained_encoder"], v["codes_pretrained_encoder"], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(codes, v["codes_final"], atol=1e-5, rtol=0)


def test_images_and_debug_maps(reference):
    model, _, v, _, _, image, pooled, dbg = reference
    torch.testing.assert_close(image, v["image"], atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, v["image_pooled"], atol=1e-4, rtol=0)
    for k in v:
        if k.startswith("debug."):
            torch.testing.assert_close(dbg[k[len("debug.") :]], v[k], atol=1e-4, rtol=0, msg=k)
        if k.startswith("noise."):
            torch.testing.assert_close(getattr(model.decoder.noises, f"noise_{k[6:]}"), v[k], atol=0, rtol=0)
    torch.testing.assert_close(model.latent_avg, v["latent_avg"], atol=0, rtol=0)


def test_forward_matches_reference(reference):
    model, _, v, x, *_ = reference
    with torch.no_grad():
        img, codes = model(x, return_latents=True)
        img2 = model.transform(v["input_rgb"], [20, 70])
    torch.testing.assert_close(img, v["image"], atol=1e-4, rtol=0)
    torch.testing.assert_close(img2, v["image"], atol=1e-4, rtol=0)


def test_full_size_layout_on_meta(sam_dir):
    layout = json.loads((sam_dir / "state_dict_layout.json").read_text())
    with torch.device("meta"):
        model = SAM()
    sd = model.state_dict()
    assert tuple(sd["latent_avg"].shape) == tuple(layout["checkpoint_top_level"]["latent_avg"]["shape"])
    sd.pop("latent_avg")
    ref = layout["state_dict"]
    assert len(ref) == layout["state_dict_summary"]["tensors"] == 1413
    assert list(sd) == [k for k, _, _ in ref]  # same keys, same order: none missing, none unexpected
    for key, shape, dtype in ref:
        assert list(sd[key].shape) == shape, key
        assert str(sd[key].dtype) == f"torch.{dtype}", key
    assert sum(t.numel() for t in sd.values()) == layout["state_dict_summary"]["elements"]
    # The loader derives the full configuration from the released shapes.
    meta_sd = {k: torch.empty(s, device="meta") for k, s, _ in ref}
    assert infer_config(meta_sd) == SAMConfig()
    check_layout(meta_sd, SAMConfig())


def test_check_layout_reports_mismatches():
    with torch.device("meta"):
        sd = SAM(TINY_CONFIG).state_dict()
    sd.pop("latent_avg")
    sd.pop("decoder.conv1.noise.weight")
    sd["decoder.extra"] = torch.empty(1, device="meta")
    sd["encoder.latlayer1.bias"] = torch.empty(3, device="meta")
    with pytest.raises(ModelFormatError) as err:
        check_layout(sd, TINY_CONFIG)
    msg = str(err.value)
    assert "missing" in msg and "unexpected" in msg and "shape" in msg


def _upfirdn_reference(x, k, up, down, p0, p1):
    """Direct definition, one output sample at a time (tiny inputs only)."""
    h, w = x.shape[-2:]
    kh, kw = k.shape
    big = torch.zeros(x.shape[0], x.shape[1], h * up, w * up, dtype=torch.float64)
    big[:, :, ::up, ::up] = x.double()
    padded = torch.zeros(x.shape[0], x.shape[1], h * up + p0 + p1, w * up + p0 + p1, dtype=torch.float64)
    src = big[:, :, max(-p0, 0) : h * up - max(-p1, 0), max(-p0, 0) : w * up - max(-p1, 0)]
    padded[:, :, max(p0, 0) : max(p0, 0) + src.shape[2], max(p0, 0) : max(p0, 0) + src.shape[3]] = src
    oh = (h * up + p0 + p1 - kh) // down + 1
    ow = (w * up + p0 + p1 - kw) // down + 1
    out = torch.zeros(x.shape[0], x.shape[1], oh, ow, dtype=torch.float64)
    kf = torch.flip(k.double(), [0, 1])
    for i in range(oh):
        for j in range(ow):
            patch = padded[:, :, i * down : i * down + kh, j * down : j * down + kw]
            out[:, :, i, j] = (patch * kf).sum((-1, -2))
    return out


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 1, (-1, 2))])
def test_upfirdn2d_definition(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=g)
    k = torch.rand(4, 4, generator=g)  # asymmetric: a missing flip would show
    got = upfirdn2d(x, k, up=up, down=down, pad=pad)
    want = _upfirdn_reference(x, k, up, down, *pad)
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_make_kernel_and_fused_lrelu():
    k = make_kernel([1, 3, 3, 1], 4.0)
    assert k.shape == (4, 4) and abs(float(k.sum()) - 4.0) < 1e-6
    x = torch.tensor([[[-1.0]], [[2.0]]])[None]  # [1,2,1,1]
    out = fused_leaky_relu(x, torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(out.flatten(), torch.tensor([-0.5 * 0.2, 1.0]) * 2**0.5)


def test_decoder_half_precision_close_to_fp32():
    """The fp16 path (used on CUDA) runs the same ops; on the CPU it must stay close to fp32."""
    from fdta_core.testing.age import tiny_sam

    model = tiny_sam(2)
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(2, TINY_CONFIG.n_styles, TINY_CONFIG.style_dim, generator=g) * 0.5
    with torch.no_grad():
        ref = model.decode(codes)
        half = model.to(torch.float16).decode(codes.half()).float()
    assert half.shape == ref.shape
    assert (half - ref).abs().max() < 0.05 * ref.abs().max()
