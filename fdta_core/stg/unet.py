"""The STG denoiser: a guided-diffusion style pixel UNet at 112x112 with DCFace's conditioning.

Parameter paths (``input_blocks.N.M``, ``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``,
``qkv``, ``proj_out``, ``out``) are the ones stored in DCFace's released checkpoints, so weights load by
name. The code is FDTA's own; the behaviour follows DCFace exactly, including its quirks:

* ``skip_downsample_level``: the "down" block of level 4 keeps the resolution (7x7) and so does the
  matching "up" block of level 5, so the resolutions are 112, 56, 28, 14, 7, 7.
* the timestep embedding puts **cos before sin** (guided-diffusion order) and takes raw integer t.
* the ID vector is *added* to the time embedding (``crossatt_and_stylemod``).
* attention splits heads before q/k/v (``QKVAttentionLegacy``) and puts the context keys/values *before*
  the 49 self keys; q and k are each scaled by ``ch ** -0.25`` and the softmax runs in float32.
* GroupNorm(32) is computed in float32 whatever the activations' dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import STGConfig


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) evaluated in float32 (fp16/bf16 statistics are too coarse at 112x112)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(
            x.dtype
        )


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, ``[cos(t f), sin(t f)]`` (cos first: DCFace's order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """Residual block with FiLM-style (scale, shift) time conditioning and optional 2x up/down."""

    def __init__(self, cin: int, emb_dim: int, cout: int, *, up: bool = False, down: bool = False) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.up, self.down = up, down
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.out_layers = nn.Sequential(
            GroupNorm32(cout), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1)
        )
        self.skip_connection: nn.Module = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.up or self.down:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self._resample(h))
            x = self._resample(x)
        else:
            h = self.in_layers(x)
        scale, shift = torch.chunk(self.emb_layers(emb).to(h.dtype)[..., None, None], 2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the 7x7 map whose keys/values are extended by the condition context."""

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.heads = channels // head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        b, c, hh, ww = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        length = qkv.shape[-1]
        ch = c // self.heads
        # heads are split before q/k/v (legacy order)
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, length).split(ch, dim=1)
        if context is not None:
            ek, ev = context.to(qkv.dtype).reshape(b * self.heads, 2 * ch, -1).split(ch, dim=1)
            k = torch.cat([ek, k], dim=-1)
            v = torch.cat([ev, v], dim=-1)
        if q.dtype == torch.float32:
            scale = 1.0 / math.sqrt(math.sqrt(ch))
            w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
            w = torch.softmax(w, dim=-1)
            a = torch.einsum("bts,bcs->bct", w, v)
        else:
            # half precision: the fused kernel keeps the softmax accumulation in float32
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            ).transpose(1, 2)
        h = self.proj_out(a.reshape(b, -1, length))
        return (flat + h).reshape(b, c, hh, ww)


class Stage(nn.ModuleList):
    """One entry of ``input_blocks``/``output_blocks``: runs its layers with the right side inputs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class STGUNet(nn.Module):
    """DCFace's dual-condition UNet (``UNetModel`` with ``condition_type='crossatt_and_stylemod'``)."""

    def __init__(self, cfg: STGConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mc, emb_dim = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = input_ch = cfg.channel_mult[0] * mc
        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(3, ch, 3, padding=1)])])
        skip_chans = [ch]
        ds = 1
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                self.input_blocks.append(Stage(layers))
                skip_chans.append(ch)
            if level != last:
                self.input_blocks.append(
                    Stage([ResBlock(ch, emb_dim, ch, down=level != cfg.skip_downsample_level)])
                )
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = Stage(
            [ResBlock(ch, emb_dim, ch), AttentionBlock(ch, cfg.num_head_channels), ResBlock(ch, emb_dim, ch)]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, ch, up=level != cfg.skip_downsample_level + 1))
                    ds //= 2
                self.output_blocks.append(Stage(layers))
        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1)
        )

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int,
        id_vector: torch.Tensor,
        context: torch.Tensor,
    ) -> torch.Tensor:
        """Full UNet output ``[B, 6, H, W]``: the first 3 channels are eps, the rest the learned variance.

        ``t`` may be a scalar (one embedding broadcast over the batch, as DCFace's DDIM loop does) or one
        timestep per image.
        """
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.long, device=x.device)
        elif t.ndim == 0:
            t = t[None]
        t = t.to(x.device)
        emb = self.time_embed(
            timestep_embedding(t, self.cfg.model_channels).to(self.time_embed[0].weight.dtype)
        )
        emb = emb + id_vector.to(emb.dtype)
        h = x.to(self.time_embed[0].weight.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)
