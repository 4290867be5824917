"""The whole STG mixer: ID encoder, style extractor + style head, and the dual-condition UNet.

Layout of :class:`STGModel` (FDTA's state-dict names; :mod:`.checkpoint` maps DCFace's names onto them):

============================  ==================================================================
``unet.*``                    the denoiser (DCFace ``ema_model.averaged_model.*``)
``id_encoder.backbone.*``     trainable IR-50 (DCFace ``label_mapping.backbone.backbone.*``)
``id_encoder.pos_emb``        [50, C] token positions (``label_mapping.pos_emb.0``)
``id_encoder.scaler``         [1] ID-vector scale (``label_mapping.scaler.0``)
``style_backbone.*``          frozen AdaFace IR-50 (``recognition_model.backbone.*``)
``style_head.*``              grid statistics + ``cross_attn_adapter`` (``external_mapping.*``)
============================  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import STGConfig
from .iresnet import IResNet
from .unet import STGUNet

#: body index whose output gives the 7x7 ID tokens: the *first* unit of stage 4 (DCFace's choice).
ID_TAP = 21
#: body index whose 56x56 output carries the style statistics (end of stage 1).
STYLE_TAP = 2


class IDEncoder(nn.Module):
    """ID condition (DCFace ``ImageEmbedder``): tokens ``[emb ; body21 tokens] + pos``; vector = token 0 * scale."""

    def __init__(self, cfg: STGConfig) -> None:
        super().__init__()
        d = cfg.id_backbone.embedding_size
        self.backbone = IResNet(cfg.id_backbone)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.id_tokens, d))
        self.scaler = nn.Parameter(torch.full((1,), 1e-3))

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB [-1, 1] ``[B,3,112,112]`` -> (ID vector ``[B, C]``, ID tokens ``[B, 49, C]``)."""
        feature, spatial = self.backbone.forward_features(rgb, ID_TAP)
        tokens = torch.cat([feature.unsqueeze(2), spatial.flatten(2)], dim=2).transpose(1, 2)
        tokens = tokens + self.pos_emb[None]
        return tokens[:, 0, :] * self.scaler, tokens[:, 1:, :]


class StyleHead(nn.Module):
    """k x k grid statistics of the style map plus one global token (DCFace ``ExternalMappingV4Dropout``).

    Deliberate quirk: the second statistic is ``mean - mean(x**2)`` (DCFace's "variance"; it is minus
    the variance minus mean**2 + mean), not the variance. Dropout is a training-time feature and is
    not applied here.
    """

    def __init__(self, cfg: STGConfig) -> None:
        super().__init__()
        cin, c = cfg.style_backbone.stage_widths[0], cfg.style_channels
        self.grid = cfg.grid
        self.relu = nn.PReLU()  # one shared slope
        self.conv = nn.Conv2d(cin, c, 1)
        self.norm = nn.BatchNorm2d(c)
        self.channel_weight = nn.Parameter(torch.full((c, 2), 0.5))
        self.pos_emb = nn.Parameter(torch.zeros(cfg.num_style_tokens, c))
        self.ln = nn.LayerNorm(c)
        self.cross_attn_adapter = nn.Conv1d(cfg.id_backbone.embedding_size, cfg.attn_context_channels, 1)

    def forward(self, spatial: torch.Tensor) -> torch.Tensor:
        """Style map ``[B, C_in, 56, 56]`` -> style tokens ``[B, 1 + k*k, C]``."""
        k = self.grid
        side = spatial.shape[-1] // k * k
        if side != spatial.shape[-1]:
            spatial = F.interpolate(spatial, size=(side, side))  # nearest, as DCFace
        f = self.norm(self.conv(self.relu(spatial)))
        b, c = f.shape[:2]
        patch = side // k
        g_mean = F.avg_pool2d(f, side, side).view(b, c, -1)
        g_var = g_mean - F.avg_pool2d(f * f, side, side).view(b, c, -1)
        p_mean = F.avg_pool2d(f, patch, patch).view(b, c, -1)
        p_var = p_mean - F.avg_pool2d(f * f, patch, patch).view(b, c, -1)
        w = self.channel_weight[None, :, :, None]
        g = (torch.stack([g_mean, g_var], dim=2) * w).sum(2)
        p = (torch.stack([p_mean, p_var], dim=2) * w).sum(2)
        tokens = torch.cat([g, p], dim=2).transpose(1, 2) + self.pos_emb[None]
        return self.ln(tokens)

    def context(self, id_tokens: torch.Tensor, style_tokens: torch.Tensor) -> torch.Tensor:
        """Cross-attention context ``[B, 2*C_attn, 49 + 1 + k*k]``: ID tokens first, then style tokens."""
        return self.cross_attn_adapter(torch.cat([id_tokens, style_tokens], dim=1).transpose(1, 2))


@dataclass
class Condition:
    """Everything the denoiser needs for one batch; reused for every DDIM step."""

    id_vector: torch.Tensor  # [B, C], added to the time embedding
    context: torch.Tensor  # [B, 2*C_attn, L], keys/values for cross-attention

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Condition:
        return Condition(self.id_vector.to(device, dtype), self.context.to(device, dtype))


class STGModel(nn.Module):
    """The complete mixer. Inputs are RGB in [-1, 1], NCHW, 112x112 (``(uint8 / 255 - 0.5) / 0.5``)."""

    def __init__(self, cfg: STGConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.unet = STGUNet(cfg)
        self.id_encoder = IDEncoder(cfg)
        self.style_backbone = IResNet(cfg.style_backbone)
        self.style_head = StyleHead(cfg)
        self.style_backbone.requires_grad_(False)

    def style_map(self, style_rgb: torch.Tensor) -> torch.Tensor:
        """Frozen style backbone up to body[2] (56x56); the rest of that network does not affect the output."""
        return self.style_backbone.forward_features(style_rgb, STYLE_TAP, stop_at_tap=True)[1]

    def style_tokens(self, style_rgb: torch.Tensor) -> torch.Tensor:
        return self.style_head(self.style_map(style_rgb))

    def condition(
        self,
        id_rgb: torch.Tensor,
        style_rgb: torch.Tensor,
        *,
        id_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Condition:
        """Build the condition for pairs (``id_rgb[i]``, ``style_rgb[i]``)."""
        id_vector, id_tokens = id_cache if id_cache is not None else self.id_encoder(id_rgb)
        style = self.style_tokens(style_rgb)
        return Condition(id_vector=id_vector, context=self.style_head.context(id_tokens, style))

    def denoise(self, x: torch.Tensor, t: torch.Tensor | int, cond: Condition) -> torch.Tensor:
        """Full UNet output ``[B, 6, H, W]`` (eps = first 3 channels)."""
        return self.unet(x, t, cond.id_vector, cond.context)

    def eps(self, x: torch.Tensor, t: torch.Tensor | int, cond: Condition) -> torch.Tensor:
        return self.denoise(x, t, cond)[:, :3]
