"""Per-element batching helpers: conditionings of different lengths, per-candidate noise."""

from __future__ import annotations

import torch

from fdta_core.acg.batching import PerElementNoise, batch_cond, initial_noise


def attention(q, k, v):
    w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return w @ v


def test_batch_cond_repeats_to_the_lcm_and_keeps_attention_unchanged():
    g = torch.Generator().manual_seed(0)
    short = torch.randn(1, 77, 16, generator=g)
    long = torch.randn(1, 154, 16, generator=g)
    b = batch_cond([short, long, short])
    assert b.shape == (3, 154, 16)
    assert torch.equal(b[1:2], long) and torch.equal(b[0, :77], short[0]) and torch.equal(b[0, 77:], short[0])
    q = torch.randn(1, 5, 16, generator=g)
    assert torch.allclose(attention(q, b[0:1], b[0:1]), attention(q, short, short), atol=1e-6)
    assert batch_cond([short, short]).shape == (2, 77, 16)


def test_noise_of_a_candidate_does_not_depend_on_its_batch():
    shape = (4, 8, 8)
    alone = initial_noise([11], shape)
    assert torch.equal(alone, torch.randn([1, *shape], generator=torch.Generator().manual_seed(11)))
    batched = initial_noise([5, 11, 7], shape)
    assert torch.equal(batched[1:2], alone)
    ns_alone, ns_batch = PerElementNoise([11], shape), PerElementNoise([5, 11], shape)
    for _ in range(3):  # every call of the sampler's noise draws the next noise of each element's own stream
        a, b = ns_alone(), ns_batch()
        assert b.shape == (2, *shape) and torch.equal(b[1:2], a)
    # a batch-1 ComfyUI default noise sampler seeded with 11 draws the same stream
    ref = torch.Generator().manual_seed(11)
    ns = PerElementNoise([11], shape)
    assert torch.equal(ns(), torch.randn([1, *shape], generator=ref))
