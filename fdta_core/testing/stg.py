"""Tiny STG mixers for tests and benchmarks: the real architecture with small widths and seeded weights."""

from __future__ import annotations

import torch

from ..stg.config import IRConfig, STGConfig


def tiny_config(grid: int = 5) -> STGConfig:
    """The widths of ``../shared/testdata/dcface/tiny_5x5*`` (same topology and quirks as the full model):
    UNet 8 channels x mult 4 everywhere (32), 2 heads of 16; IR-50 widths 16/[16,20,24,32], 32-d;
    style tokens 32-d; adapter 32 -> 64."""
    ir = IRConfig(stem_width=16, stage_widths=(16, 20, 24, 32), embedding_size=32)
    return STGConfig(
        grid=grid,
        model_channels=8,
        channel_mult=(4, 4, 4, 4, 4, 4),
        num_head_channels=16,
        id_backbone=ir,
        style_backbone=ir,
        style_channels=32,
        attn_context_channels=64,
    ).validate()


def randomize_(model: torch.nn.Module, seed: int = 0, *, out_gain: float = 0.3) -> torch.nn.Module:
    """Fill every float tensor from a seeded generator (zero-initialised layers become non-zero).

    Conv/Linear ~ N(0, 1/fan_in), biases ~ 0.05 N; norms ~ 1 + 0.1 N; BN running stats plausible;
    IR residual branches are scaled by 0.1; the UNet's last conv by ``out_gain`` so that many DDIM steps
    stay tame.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.ndim >= 2 and not name.endswith(("pos_emb", "channel_weight")):
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / fan_in**0.5)
            elif name.endswith("channel_weight"):
                t.copy_(0.5 + 0.25 * torch.randn(t.shape, generator=g))
            elif name.endswith("pos_emb"):
                t.copy_(torch.randn(t.shape, generator=g))
            elif name.endswith("weight") and t.ndim == 1 and t.numel() > 1:
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("scaler"):
                t.fill_(0.2)
            else:
                t.copy_(0.05 * torch.randn(t.shape, generator=g))
        for name, t in model.state_dict().items():
            # keep the IR residual branches small, so activations do not grow through 24 units
            # (large activations make attention logits huge and every float rounding visible)
            if ".res_layer.5." in name and name.endswith(("weight", "bias")):
                t.mul_(0.1)
        out = getattr(getattr(model, "unet", None), "out", None)
        if out is not None:
            out[2].weight.mul_(out_gain)
    return model


def tiny_model(grid: int = 5, seed: int = 0):  # -> STGModel
    """A tiny STG mixer with seeded random weights, in eval mode."""
    from ..stg.model import STGModel

    return randomize_(STGModel(tiny_config(grid)), seed).eval()
