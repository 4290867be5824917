"""Multistep solvers (DPM-Solver++ 2M, UniPC from diffusers) on DCFace's schedule."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from fdta_core.errors import ConfigError, InputError
from fdta_core.stg.ddim import PerSampleNoise, Schedule, ddim_sample
from fdta_core.stg.sampler import GenerationRequest, STGSampler
from fdta_core.testing.stg import MixtureDenoiser, tiny_model

pytest.importorskip("diffusers")
from fdta_core.stg.solvers import MULTISTEP, make_scheduler, multistep_sample  # noqa: E402


@pytest.mark.parametrize("name", MULTISTEP)
def test_scheduler_uses_dcface_schedule(name):
    sched = make_scheduler(name, 12)
    ref = Schedule.dcface()
    np.testing.assert_array_equal(sched.betas.numpy(), ref.betas)
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), ref.alphas_cumprod, rtol=0, atol=1e-6)
    assert sched.config.prediction_type == "epsilon"
    assert sched.config.thresholding and sched.config.sample_max_value == 1.0  # = DCFace's clip to [-1, 1]
    ts = [int(t) for t in sched.timesteps]
    assert len(ts) == 12 and ts[0] == 999 and ts == sorted(ts, reverse=True)


def _rms(a, b):
    return float((a - b).pow(2).mean().sqrt())


@pytest.mark.parametrize("name", MULTISTEP)
def test_solver_reaches_the_exact_ode_solution_in_few_steps(name):
    """Single Gaussian data: the probability-flow ODE has a closed form. 12 solver steps land closer to
    it than DDIM-50 (eta 0) does, each measured from its own start time."""
    den = MixtureDenoiser(components=1, std=0.1, seed=3)
    seeds = [5, 6]
    x_T = PerSampleNoise(seeds).draw((2, 3, 112, 112))
    ddim = ddim_sample(den.eps, 2, PerSampleNoise(seeds), steps=50, eta=0.0)
    err_ddim = _rms(ddim, den.ode_solution(x_T, 980))  # DCFace's 50-step DDIM starts at t=980
    out = multistep_sample(den.eps, 2, PerSampleNoise(seeds), sampler=name, steps=12)
    err = _rms(out, den.ode_solution(x_T, 999))
    assert err < err_ddim, (err, err_ddim)
    assert err < 0.01


def test_solvers_on_the_stg_model_batch_invariant_and_counted():
    model = tiny_model(seed=2)
    sampler = STGSampler(model, "cpu", "fp32")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    styles = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    req = GenerationRequest(ids, np.array([0, 1, 0]), styles, [7, 8, 9])
    seen = []
    a = sampler.generate(
        req, steps=3, batch_size=3, solver="dpmpp_2m", progress=lambda d, t: seen.append((d, t))
    )
    b = sampler.generate(req, steps=3, batch_size=1, solver="dpmpp_2m")
    assert seen[-1] == (9, 9)
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1  # batch size changes float rounding only
    ddim = sampler.generate(req, steps=3, batch_size=3, eta=0.0)
    assert not np.array_equal(a, ddim)
    u = sampler.generate(req, steps=3, batch_size=3, solver="unipc", eta=0.7)
    assert np.array_equal(u, sampler.generate(req, steps=3, batch_size=3, solver="unipc"))  # eta ignored
    with pytest.raises(InputError, match="unknown sampler 'euler'"):
        sampler.generate(req, steps=3, solver="euler")


def test_missing_diffusers_names_the_fix(monkeypatch):
    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "diffusers":
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ConfigError, match="needs the 'diffusers' package.*use sampler ddim"):
        make_scheduler("unipc", 10)


def test_mixture_denoiser_is_consistent():
    den = MixtureDenoiser(components=4, std=0.1)
    x0 = den.mu[:2].float()
    a = den.alphas_cumprod[10]
    n = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    x = (a.sqrt() * x0 + (1 - a).sqrt() * n).float()
    # at low noise the posterior picks the component each image came from: single-Gaussian posterior mean
    v = a * den.std**2 + 1 - a
    expected = den.mu[:2] + (a.sqrt() * den.std**2 / v) * (x.double() - a.sqrt() * den.mu[:2])
    assert _rms(den.x0(x, 10), expected) < 1e-6
