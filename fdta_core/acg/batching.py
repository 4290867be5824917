"""Torch helpers for sampling many candidates in one sampler call, each with its own prompt and noise.

Kept out of the node (and out of ComfyUI) so CI covers them: per-element cross-attention conditionings
of different token lengths become one batch, and ancestral/SDE samplers get one noise generator per
batch element, so a candidate's image does not depend on which candidates it was batched with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def batch_cond(conds: Sequence[Any]):  # -> torch.Tensor
    """Stack ``[1, L_i, D]`` conditionings into ``[B, L, D]``.

    Shorter ones are repeated up to the least common multiple of the lengths, which is ComfyUI's own rule
    when it batches conds (``CONDCrossAttn.concat``): repeating every key and value the same number of
    times leaves softmax attention unchanged.
    """
    import torch

    length = math.lcm(*[int(c.shape[1]) for c in conds])
    return torch.cat([c if c.shape[1] == length else c.repeat(1, length // c.shape[1], 1) for c in conds])


def initial_noise(seeds: Sequence[int], shape: Sequence[int]):  # -> torch.Tensor
    """``[B, *shape]`` starting noise, element i drawn exactly as ComfyUI's ``prepare_noise`` draws the
    noise of a batch of one with seed ``seeds[i]`` (CPU generator)."""
    import torch

    return torch.cat(
        [torch.randn([1, *shape], generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )


class PerElementNoise:
    """``noise_sampler(sigma, sigma_next)`` for k-diffusion samplers with one generator per batch element,
    seeded like ComfyUI's default noise sampler of a batch-1 run with that element's seed."""

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device: Any = "cpu") -> None:
        import torch

        self.gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.shape = [1, *shape]
        self.device = device

    def __call__(self, sigma: Any = None, sigma_next: Any = None):  # -> torch.Tensor
        import torch

        return torch.cat([torch.randn(self.shape, generator=g, device=self.device) for g in self.gens])
