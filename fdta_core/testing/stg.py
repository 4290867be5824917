"""Tiny STG mixers for tests and benchmarks: the real architecture with small widths and seeded weights."""

from __future__ import annotations

from collections.abc import Callable

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


def save_tiny_stg(path, *, seed: int = 3, source: str = "tiny"):  # -> Path
    """A tiny STG mixer saved as ``fdta stg convert`` writes one (safetensors with its settings), the
    form the STG loader accepts under any name; written to a temporary name and renamed."""
    import json
    import os
    from pathlib import Path

    from safetensors.torch import save_file

    from ..stg.checkpoint import FORMAT, SETTINGS_KEY

    path = Path(path)
    stg = tiny_model(seed=seed)
    settings = {"format": FORMAT, "grid": stg.cfg.grid, "config": stg.cfg.to_dict(), "source": source}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in stg.state_dict().items()}, str(tmp),
              metadata={SETTINGS_KEY: json.dumps(settings), "format": FORMAT})  # fmt: skip
    os.replace(tmp, path)
    return path


class MixtureDenoiser:
    """A denoiser whose sampling converges: the exact posterior mean of a Gaussian-mixture data set, plus
    an optional network correction. For judging samplers (``bench/bench_stg_steps.py``, tests).

    A random-weight UNet is no denoiser: its eps disagrees with the noise level, x0 is clipped at
    nearly every step, and DDIM-50 ends as far from DDIM-250 as DDIM-8 does, so step counts cannot be
    compared on it. Here the data are ``K`` smooth 112x112 images ``mu_k`` with per-pixel std ``s``;
    for ``x_t = sqrt(a) x0 + sqrt(1-a) n`` the posterior mean is
    ``sum_k w_k (mu_k + sqrt(a) s^2 / v (x - sqrt(a) mu_k))`` with ``v = a s^2 + 1 - a`` and ``w``
    the softmax of ``-|x - sqrt(a) mu_k|^2 / 2v``. ``correction(x, t)`` (e.g. ``gain`` x a tiny STG
    UNet's output) is added to that x0, so the network's cost and conditioning stay in the loop while
    the trajectory stays a smooth ODE.
    """

    def __init__(self, components: int = 8, std: float = 0.1, seed: int = 0, image_size: int = 112) -> None:
        from ..stg.ddim import Schedule

        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(
            torch.arange(float(image_size)), torch.arange(float(image_size)), indexing="ij"
        )
        mus = []
        for _ in range(components):
            cx, cy, r = (image_size * (0.36 + 0.28 * torch.rand(3, generator=g))).tolist()
            blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.6 * r) ** 2))
            colour = torch.rand(3, 1, 1, generator=g) * 1.6 - 0.8
            mus.append((blob * colour + (1 - blob) * -0.6).clamp(-1, 1))
        self.mu = torch.stack(mus).double()
        self.std = float(std)
        self.alphas_cumprod = torch.from_numpy(Schedule.dcface().alphas_cumprod).double()

    def x0(self, x: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alphas_cumprod[t]
        xd = x.double()
        v = a * self.std**2 + 1 - a
        diff = xd[:, None] - a.sqrt() * self.mu[None]
        w = torch.softmax(-diff.pow(2).flatten(2).sum(-1) / (2 * v), dim=1)
        x0k = self.mu[None] + (a.sqrt() * self.std**2 / v) * diff
        return (w[:, :, None, None, None] * x0k).sum(1)

    def eps(
        self,
        x: torch.Tensor,
        t: int,
        correction: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        a = self.alphas_cumprod[t]
        x0 = self.x0(x, t)
        if correction is not None:
            x0 = x0 + correction(x, t).double()
        return ((x.double() - a.sqrt() * x0) / (1 - a).sqrt()).float()

    def ode_solution(self, x_T: torch.Tensor, t: int) -> torch.Tensor:
        """Exact probability-flow ODE solution at t=0 from ``x_T`` at ``t``, for ONE component (K=1):
        the standardised ``(x_t - sqrt(a) mu) / sqrt(v)`` stays constant along the flow."""
        if len(self.mu) != 1:
            raise ValueError("closed form only for a single component")
        a = self.alphas_cumprod[t]
        v = a * self.std**2 + 1 - a
        return (self.mu + self.std * (x_T.double() - a.sqrt() * self.mu) / v.sqrt()).float()
