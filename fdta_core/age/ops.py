"""Pure-torch versions of StyleGAN2's special operations (no custom CUDA build).

rosinality's StyleGAN2 compiles ``upfirdn2d`` and ``fused_bias_act`` as CUDA extensions; compiling them
inside ComfyUI is fragile, so these are the same computations written with standard torch ops. They run
on any device and dtype torch supports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


def make_kernel(k: Sequence[float], scale: float = 1.0) -> torch.Tensor:
    """A normalised 2-D FIR kernel: the outer product of ``k`` with itself, divided by its sum, times ``scale``."""
    t = torch.tensor(list(k), dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum() * scale


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative crops), convolve with ``kernel`` (a true convolution),
    then keep every ``down``-th sample; per channel, identically on both axes.

    The output side is ``(H*up + pad0 + pad1 - kh) // down + 1``.
    """
    b, c, h, w = x.shape
    p0, p1 = int(pad[0]), int(pad[1])
    out = x.reshape(b * c, 1, h, w)
    if up > 1:
        z = out.new_zeros(b * c, 1, h * up, w * up)
        z[:, :, ::up, ::up] = out
        out = z
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = out.shape[-2:]
        out = out[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(dtype=out.dtype, device=out.device)[None, None]
    out = F.conv2d(out, weight)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out.reshape(b, c, out.shape[-2], out.shape[-1])


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2, scale: float = SQRT2
) -> torch.Tensor:
    """``scale * leaky_relu(x + bias[channel], negative_slope)`` (channel = dim 1)."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.view(shape).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale
