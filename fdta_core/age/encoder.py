"""pSp ``GradualStyleEncoder`` on an IR-SE-50 backbone, with pSp's parameter names.

The widths are configurable only so that tests can build a tiny model; the released SAM checkpoint uses
the full widths (:data:`FULL_WIDTHS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import EqualLinear

#: IR-50: units per block, each block's first unit has stride 2 (on its second conv).
IR50_UNITS: tuple[int, ...] = (3, 4, 14, 3)
#: Feature taps (unit indices) for the coarse / middle / fine feature maps.
TAP_C1, TAP_C2, TAP_C3 = 6, 20, 23
#: Full widths: stem, then the output width of each of the four blocks.
FULL_WIDTHS: tuple[int, ...] = (64, 64, 128, 256, 512)


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class StrideSample(nn.Module):
    """pSp's ``MaxPool2d(1, stride)`` shortcut: a 1x1 max-pool is plain stride sampling."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x


class BottleneckIRSE(nn.Module):
    def __init__(self, in_channel: int, depth: int, stride: int, se_reduction: int) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = StrideSample(stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """A style head: log2(spatial) stride-2 convs (LeakyReLU 0.01) down to 1x1, then an EqualLinear."""

    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        self.out_c = out_c
        layers: list[nn.Module] = []
        for j in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_c if j == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class GradualStyleEncoder(nn.Module):
    """Image ``[B, input_nc, 256, 256]`` -> W+ codes ``[B, n_styles, style_dim]`` through an FPN over IR-SE-50."""

    def __init__(
        self,
        input_nc: int,
        n_styles: int,
        style_dim: int = 512,
        widths: Sequence[int] = FULL_WIDTHS,
        se_reduction: int = 16,
    ) -> None:
        super().__init__()
        stem, *blocks = widths
        if len(blocks) != len(IR50_UNITS):
            raise ValueError(f"widths must be (stem, 4 block widths), got {tuple(widths)}")
        self.input_layer = nn.Sequential(
            nn.Conv2d(input_nc, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)
        )
        units: list[nn.Module] = []
        in_c = stem
        for depth, n in zip(blocks, IR50_UNITS, strict=True):
            for u in range(n):
                units.append(
                    BottleneckIRSE(in_c if u == 0 else depth, depth, 2 if u == 0 else 1, se_reduction)
                )
            in_c = depth
        self.body = nn.Sequential(*units)
        top = blocks[-1]
        self.n_styles = n_styles
        self.coarse_ind, self.middle_ind = 3, 7
        self.styles = nn.ModuleList(
            GradualStyleBlock(
                top, style_dim, 16 if i < self.coarse_ind else 32 if i < self.middle_ind else 64
            )
            for i in range(n_styles)
        )
        self.latlayer1 = nn.Conv2d(blocks[2], top, 1)
        self.latlayer2 = nn.Conv2d(blocks[1], top, 1)

    def forward(self, x: torch.Tensor, debug: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.input_layer(x)
        c1 = c2 = c3 = x
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == TAP_C1:
                c1 = x
            elif i == TAP_C2:
                c2 = x
            elif i == TAP_C3:
                c3 = x
        latents = [self.styles[j](c3) for j in range(self.coarse_ind)]
        p2 = _upsample_add(c3, self.latlayer1(c2))
        latents += [self.styles[j](p2) for j in range(self.coarse_ind, self.middle_ind)]
        p1 = _upsample_add(p2, self.latlayer2(c1))
        latents += [self.styles[j](p1) for j in range(self.middle_ind, self.n_styles)]
        if debug is not None:
            debug.update(c1=c1, c2=c2, c3=c3, p2=p2, p1=p1)
        return torch.stack(latents, dim=1)
