"""SAM (Alaluf et al. 2021) as one module whose ``state_dict`` keys are those of ``sam_ffhq_aging.pt``.

``codes = encoder(x_rgb ++ age_plane) + (pretrained_encoder(x_rgb) + latent_avg)`` and the StyleGAN2
decoder turns the codes into a 1024 px face. ``latent_avg`` is a buffer here (a separate top-level key
in SAM's file) so that one strict ``load_state_dict`` checks everything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import FULL_WIDTHS, GradualStyleEncoder
from .stylegan2 import Generator, default_channels

#: SAM's encoder input side.
INPUT_SIZE = 256


@dataclass(frozen=True)
class SAMConfig:
    """Constructor arguments of a SAM model; the defaults are those of the released checkpoint."""

    output_size: int = 1024
    style_dim: int = 512
    encoder_widths: tuple[int, ...] = FULL_WIDTHS
    se_reduction: int = 16
    decoder_channels: dict[int, int] = field(default_factory=lambda: default_channels(2))
    n_mlp: int = 8
    lr_mlp: float = 0.01
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    #: Side of ``resize=True`` output (SAM's ``face_pool``); 256 at full size.
    pool_size: int = 256

    @property
    def n_styles(self) -> int:
        return int(math.log2(self.output_size)) * 2 - 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["decoder_channels"] = {str(k): v for k, v in self.decoder_channels.items()}
        d["encoder_widths"] = list(self.encoder_widths)
        d["blur_kernel"] = list(self.blur_kernel)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAMConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "decoder_channels" in kw:
            kw["decoder_channels"] = {int(k): int(v) for k, v in kw["decoder_channels"].items()}
        for k in ("encoder_widths", "blur_kernel"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        return cls(**kw)


FULL_CONFIG = SAMConfig()


def age_plane_value(age: float) -> float:
    """SAM's age channel: ``int(age) / 100`` (age 20 -> 0.2)."""
    return int(age) / 100.0


class SAM(nn.Module):
    """SAM age transformation network (inference only)."""

    def __init__(self, config: SAMConfig = FULL_CONFIG) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = GradualStyleEncoder(4, c.n_styles, c.style_dim, c.encoder_widths, c.se_reduction)
        self.decoder = Generator(
            c.output_size,
            c.style_dim,
            c.n_mlp,
            c.decoder_channels,
            blur_kernel=c.blur_kernel,
            lr_mlp=c.lr_mlp,
        )
        self.pretrained_encoder = GradualStyleEncoder(
            3, c.n_styles, c.style_dim, c.encoder_widths, c.se_reduction
        )
        self.register_buffer("latent_avg", torch.zeros(c.n_styles, c.style_dim))
        self.eval()

    @staticmethod
    def add_age_channel(x_rgb: torch.Tensor, ages: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` normalised RGB + one constant plane ``int(age)/100`` per sample -> ``[B,4,H,W]``."""
        if isinstance(ages, torch.Tensor):
            vals = torch.floor(ages.to(torch.float64)).div(100.0).to(x_rgb.dtype)
        else:
            vals = torch.tensor([age_plane_value(a) for a in ages], dtype=x_rgb.dtype)
        vals = vals.to(x_rgb.device)
        if vals.shape != (x_rgb.shape[0],):
            raise ValueError(f"need one age per image: {tuple(vals.shape)} ages for {x_rgb.shape[0]} images")
        plane = vals.view(-1, 1, 1, 1).expand(-1, 1, x_rgb.shape[2], x_rgb.shape[3])
        return torch.cat([x_rgb, plane], dim=1)

    def encode(self, x: torch.Tensor, debug: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """W+ codes from the 4-channel input (RGB in [-1,1] + age plane)."""
        if x.ndim != 4 or x.shape[1] != 4:
            raise ValueError(f"expected [B,4,H,W] (RGB + age plane), got {list(x.shape)}")
        enc_debug: dict[str, torch.Tensor] | None = {} if debug is not None else None
        codes = self.encoder(x, debug=enc_debug)
        base = self.pretrained_encoder(x[:, :3]) + self.latent_avg.to(x.dtype)
        if debug is not None:
            debug.update({f"encoder.{k}": v for k, v in enc_debug.items()})
            debug["codes_encoder"] = codes
            debug["codes_pretrained_encoder"] = base - self.latent_avg.to(x.dtype)
        return codes + base

    def decode(
        self, codes: torch.Tensor, resize: bool = False, debug: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        dec_debug: dict[str, torch.Tensor] | None = {} if debug is not None else None
        img = self.decoder(codes, debug=dec_debug)
        if debug is not None:
            debug.update({f"decoder.{k}": v for k, v in dec_debug.items()})
        if resize:
            img = F.adaptive_avg_pool2d(img, self.config.pool_size)
        return img

    def forward(self, x: torch.Tensor, resize: bool = False, return_latents: bool = False):
        """SAM's ``net(x, resize, randomize_noise=False)``: x is ``[B,4,256,256]``; output not clamped."""
        codes = self.encode(x)
        img = self.decode(codes, resize=resize)
        return (img, codes) if return_latents else img

    def transform(
        self, x_rgb: torch.Tensor, ages: Sequence[float] | torch.Tensor, resize: bool = False
    ) -> torch.Tensor:
        """Age the normalised RGB batch ``x_rgb`` ``[B,3,256,256]`` to ``ages`` (years, one per image)."""
        return self.forward(self.add_age_channel(x_rgb, ages), resize=resize)
