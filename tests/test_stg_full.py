"""The full-size architecture (released widths) with random weights: 2 DDIM steps on a batch of 2, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fdta_core.stg import GenerationRequest, STGConfig, STGModel, STGSampler
from fdta_core.testing.stg import randomize_


@pytest.mark.slow
def test_full_size_two_steps_batch_of_two():
    torch.manual_seed(0)
    model = randomize_(STGModel(STGConfig.full_size(5)), seed=0).eval()
    n_unet = sum(p.numel() for p in model.unet.parameters())
    assert n_unet == 93_563_910  # matches the released layout's UNet parameter count
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    styles = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    sampler = STGSampler(model, "cpu", "fp32")
    with torch.no_grad():
        x = torch.randn(2, 3, 112, 112)
        cond = model.condition(torch.zeros(2, 3, 112, 112), torch.zeros(2, 3, 112, 112))
        assert cond.context.shape == (2, 1024, 75) and cond.id_vector.shape == (2, 512)
        assert model.denoise(x, 980, cond).shape == (2, 6, 112, 112)
    out = sampler.generate(GenerationRequest(ids, np.array([0, 1]), styles, [1, 2]), steps=2, batch_size=2)
    assert out.shape == (2, 112, 112, 3) and out.dtype == np.uint8
    assert out.std() > 1.0
