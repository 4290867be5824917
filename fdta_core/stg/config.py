"""Shapes of the STG mixer (DCFace's dual-condition UNet and its condition networks).

One dataclass describes every width, so the same code builds the full-size released model and the tiny
models that tests and benchmarks use. :func:`STGConfig.from_state_dict` reads the widths back from a
checkpoint, so a loader never needs DCFace's hydra configs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelFormatError

#: Units per stage of an IR-50; DCFace taps body[2] (style) and body[21] (ID), so the depth is fixed.
IR50_UNITS = (3, 4, 14, 3)


@dataclass(frozen=True)
class IRConfig:
    """An IResNet-50 (``BasicBlockIR`` units 3/4/14/3) with configurable widths."""

    stem_width: int = 64
    stage_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    embedding_size: int = 512
    stage_units: tuple[int, int, int, int] = IR50_UNITS


@dataclass(frozen=True)
class STGConfig:
    """Every width of the mixer. Defaults are the full-size released DCFace model with a 5x5 style grid."""

    grid: int = 5
    image_size: int = 112
    # UNet
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 1
    attention_ds: tuple[int, ...] = (16,)
    num_head_channels: int = 64
    skip_downsample_level: int = 4
    out_channels: int = 6
    # condition networks
    id_backbone: IRConfig = field(default_factory=IRConfig)
    style_backbone: IRConfig = field(default_factory=IRConfig)
    id_tokens: int = 50
    style_channels: int = 512
    attn_context_channels: int = 1024

    @property
    def time_embed_dim(self) -> int:
        """guided-diffusion's ``4 * model_channels``; DCFace adds the ID vector to it, so it must equal
        the ID embedding width."""
        return 4 * self.model_channels

    @property
    def num_style_tokens(self) -> int:
        return 1 + self.grid * self.grid

    @property
    def context_length(self) -> int:
        return (self.id_tokens - 1) + self.num_style_tokens

    def validate(self) -> STGConfig:
        if self.grid < 1:
            raise ModelFormatError(f"style grid must be >= 1, got {self.grid}", where="STGConfig.grid")
        if self.time_embed_dim != self.id_backbone.embedding_size:
            raise ModelFormatError(
                f"time embedding width {self.time_embed_dim} must equal the ID embedding width "
                f"{self.id_backbone.embedding_size} (DCFace adds the ID vector to the time embedding)",
                where="STGConfig",
            )
        if self.id_backbone.stage_widths[3] != self.id_backbone.embedding_size:
            raise ModelFormatError(
                "the ID tokens (body[21] channels) and the ID vector must have the same width",
                where="STGConfig.id_backbone",
            )
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> STGConfig:
        d = dict(data)
        for key in ("id_backbone", "style_backbone"):
            if key in d and isinstance(d[key], Mapping):
                sub = dict(d[key])
                for t in ("stage_widths", "stage_units"):
                    if t in sub:
                        sub[t] = tuple(int(x) for x in sub[t])
                d[key] = IRConfig(**sub)
        for t in ("channel_mult", "attention_ds"):
            if t in d:
                d[t] = tuple(int(x) for x in d[t])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ModelFormatError(f"unknown STG config field(s) {sorted(unknown)}", where="STGConfig")
        return cls(**d).validate()

    @classmethod
    def full_size(cls, grid: int = 5) -> STGConfig:
        """The released DCFace mixer (``dcface_5x5.ckpt`` or ``dcface_3x3.ckpt``)."""
        return cls(grid=grid).validate()

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any], *, num_head_channels: int | None = None) -> STGConfig:
        """Read the widths from a state dict in FDTA's naming (see :mod:`.checkpoint`).

        The head width cannot be read from weights (heads split a 1-D conv); DCFace uses 64, which is
        the default whenever the attention width is a multiple of 64.
        """

        def shape(key: str) -> tuple[int, ...]:
            if key not in sd:
                raise ModelFormatError(f"checkpoint lacks '{key}'", where="STGConfig.from_state_dict")
            return tuple(int(s) for s in sd[key].shape)

        mc = shape("unet.time_embed.0.weight")[1]
        mults: list[int] = []
        idx = 1
        while f"unet.input_blocks.{idx}.0.out_layers.3.weight" in sd:
            mults.append(shape(f"unet.input_blocks.{idx}.0.out_layers.3.weight")[0] // mc)
            idx += 2  # one res block + one up/down block per level (num_res_blocks = 1)
        if not mults:
            raise ModelFormatError("no UNet input blocks found", where="STGConfig.from_state_dict")
        attn_ch = None
        for key in sd:
            if key.startswith("unet.middle_block.1.qkv.weight"):
                attn_ch = shape(key)[1]
        if num_head_channels is None:
            num_head_channels = 64 if attn_ch and attn_ch % 64 == 0 else (attn_ch or 64)

        def ir(prefix: str) -> IRConfig:
            stem = shape(f"{prefix}input_layer.0.weight")[0]
            firsts = [0, 3, 7, 21]
            widths = tuple(shape(f"{prefix}body.{i}.res_layer.1.weight")[0] for i in firsts)
            emb = shape(f"{prefix}output_layer.3.weight")[0]
            return IRConfig(stem_width=stem, stage_widths=widths, embedding_size=emb)  # type: ignore[arg-type]

        pos = shape("style_head.pos_emb")[0]
        grid = int(round((pos - 1) ** 0.5))
        if grid * grid + 1 != pos:
            raise ModelFormatError(f"style position embedding has {pos} rows, not 1 + k*k", where="STGConfig")
        return cls(
            grid=grid,
            model_channels=mc,
            channel_mult=tuple(mults),
            num_head_channels=int(num_head_channels),
            out_channels=shape("unet.out.2.weight")[0],
            id_backbone=ir("id_encoder.backbone."),
            style_backbone=ir("style_backbone."),
            id_tokens=shape("id_encoder.pos_emb")[0],
            style_channels=shape("style_head.conv.weight")[0],
            attn_context_channels=shape("style_head.cross_attn_adapter.weight")[0],
        ).validate()
