"""DDIM sampling with DCFace's schedule, batched over (identity, style) pairs.

Facts matched on purpose (DCFace's ``DDIMScheduler`` / ``DDIMPipeline``):

* ``betas = numpy.linspace(1e-4, 0.02, 1000)`` in float32 (``torch.linspace`` differs by 2e-9); ``alphas_cumprod`` is numpy's float32 cumprod
  (``torch.cumprod`` differs by up to 3e-7).
* n steps: ``r = 1000 // n``, timesteps ``[(n-1) r, ..., r, 0]``; the previous step is ``t - r`` and
  below 0 uses alpha-bar 1.0 (``set_alpha_to_one``), computed in float64 like DCFace's scalar.
* ``x0`` is clipped to [-1, 1]; the direction term uses the *unclipped* eps; sigma follows DDIM's formula
  with eta (1.0 by default: DCFace samples with eta 1).
* noise order: ``x_T`` first, then one draw per step, the last step included (n + 1 draws), and only when
  eta > 0.

Noise sources: :class:`BatchNoise` draws whole-batch tensors from one CPU generator (DCFace's order,
used to reproduce its vectors); :class:`PerSampleNoise` gives every image its own CPU generator seeded
from ``fdta_core.seeds``, so an image does not depend on the batch it was computed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

log = logging.getLogger(__name__)

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_STEPS = 50
DEFAULT_ETA = 1.0


@dataclass(frozen=True)
class Schedule:
    """DCFace's linear beta schedule (float32, numpy cumprod)."""

    betas: np.ndarray
    alphas_cumprod: np.ndarray

    @classmethod
    def dcface(cls) -> Schedule:
        betas = np.linspace(1e-4, 0.02, NUM_TRAIN_TIMESTEPS, dtype=np.float32)
        return cls(betas=betas, alphas_cumprod=np.cumprod(1.0 - betas, axis=0).astype(np.float32))


def ddim_timesteps(steps: int) -> list[int]:
    """``[(n-1) r, ..., r, 0]`` with ``r = 1000 // n``."""
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise InputError(
            f"steps must be between 1 and {NUM_TRAIN_TIMESTEPS}, got {steps}", where="ddim.steps"
        )
    r = NUM_TRAIN_TIMESTEPS // steps
    return [int(i * r) for i in range(steps)][::-1]


class BatchNoise:
    """Whole-batch draws from one CPU generator, in DCFace's order (x_T, then one per step)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator)


class PerSampleNoise:
    """One CPU generator per image (seeded by the caller, e.g. from ``derive_seed(run, identity, style)``)."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} images but {len(self.generators)} seeds")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in self.generators], dim=0)


NoiseSource = BatchNoise | PerSampleNoise


@dataclass
class StepRecord:
    """Intermediates of one step (kept only when asked for; used by the reference tests)."""

    t: int
    eps: torch.Tensor
    pred_x0: torch.Tensor
    x: torch.Tensor
    noise: torch.Tensor | None


def ddim_step(
    schedule: Schedule,
    eps: torch.Tensor,
    t: int,
    r: int,
    x: torch.Tensor,
    eta: float,
    noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update in float32; returns ``(x_prev, clipped x0)``."""
    ac = torch.from_numpy(schedule.alphas_cumprod)
    a_t = ac[t]
    a_p = ac[t - r] if t - r >= 0 else torch.tensor(1.0, dtype=torch.float64)
    b_t = 1 - a_t
    x0 = ((x - b_t**0.5 * eps) / a_t**0.5).clamp(-1, 1)
    variance = ((1 - a_p) / b_t) * (1 - a_t / a_p)
    std = eta * variance**0.5
    direction = (1 - a_p - std**2) ** 0.5 * eps
    x_prev = a_p**0.5 * x0 + direction
    if eta > 0:
        if noise is None:
            raise ValueError("eta > 0 needs noise")
        x_prev = x_prev + variance**0.5 * eta * noise
    return x_prev.to(torch.float32), x0


def ddim_sample(
    eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
    batch: int,
    noise: NoiseSource,
    *,
    steps: int = DEFAULT_STEPS,
    eta: float = DEFAULT_ETA,
    device: torch.device | str = "cpu",
    image_size: int = 112,
    schedule: Schedule | None = None,
    record: list[StepRecord] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run DDIM from pure noise; returns ``x_0`` as float32 ``[B, 3, H, W]`` in [-1, 1] on ``device``.

    ``eps_fn(x, t)`` returns eps for the float32 batch ``x`` (the caller handles dtype/layout).
    Noise is drawn on the CPU and moved, as DCFace does, so CPU and GPU runs start from the same x_T.
    """
    if eta < 0:
        raise InputError(f"eta must be >= 0, got {eta}", where="ddim.eta")
    schedule = schedule or Schedule.dcface()
    shape = (batch, 3, image_size, image_size)
    x = noise.draw(shape).to(device)
    ts = ddim_timesteps(steps)
    r = NUM_TRAIN_TIMESTEPS // steps
    for i, t in enumerate(ts):
        eps = eps_fn(x, t).to(torch.float32)
        z = noise.draw(shape).to(device) if eta > 0 else None
        x, x0 = ddim_step(schedule, eps, t, r, x, eta, z)
        if record is not None:
            record.append(StepRecord(t, eps, x0, x, z))
        if on_step is not None:
            on_step(i + 1, len(ts))
    return x


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[-1, 1]`` NCHW -> uint8 NHWC RGB (DCFace's ``clamp(x/2 + 0.5, 0, 1)``, then rounded)."""
    img = (x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW in [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return (t.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
