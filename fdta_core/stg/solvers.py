"""Deterministic multistep solvers for the STG mixer, from diffusers' schedulers.

DCFace samples with DDIM, 50 steps, eta 1 (:mod:`.ddim`, the default and exact to DCFace's reference
vectors). For the same probability-flow ODE, DPM-Solver++ 2M and UniPC reach in 10-15 evaluations
what DDIM reaches in 50. They are taken from ``diffusers`` (an optional dependency: extra ``solvers``),
configured to DCFace's noise process:

* betas: DCFace's own array (``numpy.linspace(1e-4, 0.02, 1000)`` in float32) passed as
  ``trained_betas``; diffusers builds ``alphas_cumprod`` with ``torch.cumprod`` (within 3e-7 of DCFace's
  numpy cumprod, checked by :func:`make_scheduler`);
* prediction type ``epsilon`` (DCFace's UNet predicts noise);
* DCFace clips x0 to [-1, 1]; here diffusers' thresholding with ``sample_max_value=1`` does exactly
  that (its quantile scale is clamped to [1, 1]);
* Karras sigmas (``use_karras_sigmas``): steps from t=999 (pure noise, which few-step solvers need;
  DDIM's leading spacing starts at t=(n-1)*(1000//n)) dense towards low noise, where the trajectory
  bends most. Measured by ``bench/bench_stg_steps.py``: with evenly spaced ("trailing") timesteps
  both solvers at 16 steps were 3.2x DDIM-50's deviation, with Karras sigmas 0.5x and less.

Only the first noise (x_T) is drawn: these solvers add no noise, so ``eta`` does not apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError, InputError
from .ddim import NUM_TRAIN_TIMESTEPS, NoiseSource, Schedule

log = logging.getLogger(__name__)

DDIM = "ddim"
DPMPP_2M = "dpmpp_2m"
UNIPC = "unipc"
SAMPLERS = (DDIM, DPMPP_2M, UNIPC)
MULTISTEP = (DPMPP_2M, UNIPC)
# DCFace's schedule vs diffusers' torch.cumprod of the same betas
SCHEDULE_TOLERANCE = 1e-6


def check_sampler(name: str, where: str = "STG sampler") -> str:
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler '{name}'", where=where, fix=f"use one of {', '.join(SAMPLERS)}.")
    return name


def make_scheduler(
    name: str,
    steps: int,
    schedule: Schedule | None = None,
    *,
    karras: bool = True,
):
    """A diffusers multistep scheduler on DCFace's noise schedule, with ``steps`` timesteps set."""
    check_sampler(name)
    if name == DDIM:
        raise ValueError("DDIM runs through fdta_core.stg.ddim, not diffusers")
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise InputError(f"steps must be between 1 and {NUM_TRAIN_TIMESTEPS}, got {steps}", where="STG steps")
    try:
        from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
    except ImportError as e:  # optional dependency
        raise ConfigError(
            f"the {name} sampler needs the 'diffusers' package ({e})",
            where="STG sampler",
            fix="pip install 'diffusers>=0.30' (or pip install comfyui-fdta[solvers]), or use sampler ddim.",
        ) from e
    schedule = schedule or Schedule.dcface()
    common = dict(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        trained_betas=schedule.betas.astype(np.float32),
        prediction_type="epsilon",
        thresholding=True,
        sample_max_value=1.0,
        timestep_spacing="trailing",
        use_karras_sigmas=karras,
        solver_order=2,
        lower_order_final=True,
    )
    if name == DPMPP_2M:
        sched = DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_type="midpoint", final_sigmas_type="zero", **common
        )
    else:
        sched = UniPCMultistepScheduler(
            predict_x0=True, solver_type="bh2", final_sigmas_type="zero", **common
        )
    dev = float(
        np.abs(sched.alphas_cumprod.double().numpy() - schedule.alphas_cumprod.astype(np.float64)).max()
    )
    if dev > SCHEDULE_TOLERANCE:  # a diffusers change we do not know about: refuse rather than drift
        raise RuntimeError(f"diffusers' {name} schedule deviates from DCFace's by {dev:.2e}")
    sched.set_timesteps(steps, device="cpu")
    return sched


def multistep_sample(
    eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
    batch: int,
    noise: NoiseSource,
    *,
    sampler: str,
    steps: int,
    device: torch.device | str = "cpu",
    image_size: int = 112,
    schedule: Schedule | None = None,
    on_step: Callable[[int, int], None] | None = None,
    karras: bool = True,
) -> torch.Tensor:
    """Solve DCFace's probability-flow ODE from x_T; returns float32 ``[B, 3, H, W]`` in [-1, 1].

    x_T comes from ``noise`` exactly as in :func:`.ddim.ddim_sample` (so both start from the same
    image), and one ``eps_fn`` call is made per step. Solver arithmetic runs in float32.
    """
    sched = make_scheduler(sampler, steps, schedule, karras=karras)
    shape = (batch, 3, image_size, image_size)
    x = noise.draw(shape).to(device) * float(sched.init_noise_sigma)
    ts = [int(t) for t in sched.timesteps]
    for i, t in enumerate(ts):
        eps = eps_fn(x, t).to(torch.float32)
        x = sched.step(eps, t, x, return_dict=False)[0].to(torch.float32)
        if on_step is not None:
            on_step(i + 1, len(ts))
    return x.clamp(-1, 1)
