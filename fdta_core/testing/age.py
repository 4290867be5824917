"""Tiny SAM models and checkpoint files for tests and the bench (real architecture, random weights).

The tiny configuration is the one of ``../shared/testdata/sam/tiny_config.json``: same unit counts,
taps, heads, kernels and 256 px input, with small widths and a 64 px generator.
"""

from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..age.model import SAM, SAMConfig

TINY_CONFIG = SAMConfig(
    output_size=64,
    style_dim=24,
    encoder_widths=(4, 4, 8, 16, 32),
    se_reduction=4,
    decoder_channels={4: 32, 8: 32, 16: 32, 32: 32, 64: 16},
    pool_size=16,
)


@torch.no_grad()
def tiny_sam(seed: int = 0, config: SAMConfig = TINY_CONFIG) -> SAM:
    """A SAM of ``config`` with seeded random weights whose outputs are well scaled (BN statistics,
    PReLU slopes, biases and noise strengths set as in the reference vectors' recipe)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SAM(config)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
        elif isinstance(mod, nn.PReLU):
            mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) * 0.4 + 0.05)
    for name, p in model.named_parameters():
        if name.endswith("noise.weight"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        elif name.endswith("activate.bias") or (name.endswith(".bias") and "to_rgb" in name and p.ndim == 4):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.latent_avg.copy_(torch.randn(model.latent_avg.shape, generator=g) * 0.5)
    return model.eval()


def _retag_storages_as_cuda(path: Path) -> None:
    """Rewrite a torch zip checkpoint so its storages claim to come from ``cuda:0`` (as SAM's file does).

    torch.save records each storage's location as the pickled string ``'cpu'``; the released checkpoint
    says ``'cuda:0'`` instead, which ``torch.load`` without ``map_location`` cannot restore on a CPU-only
    machine.
    """
    old, new = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info.filename)) for info in z.infolist()]
    tmp = path.with_name(path.name + ".retag")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                if old not in data:
                    raise RuntimeError("no 'cpu' storage location found in data.pkl")
                data = data.replace(old, new)
            z.writestr(info.filename, data)
    os.replace(tmp, path)


def save_sam_checkpoint(
    model: SAM,
    path: str | os.PathLike,
    *,
    opts: dict[str, Any] | None = None,
    opts_as_namespace: bool = False,
    latent_avg_vector: bool = False,
    cuda_tagged: bool = False,
) -> Path:
    """Write ``model`` in the format of SAM's released file: ``torch.save`` of a dict with
    ``state_dict`` (no ``latent_avg``), ``opts`` and ``latent_avg``.

    ``opts_as_namespace`` pickles the options as an ``argparse.Namespace`` (older SAM versions),
    ``latent_avg_vector`` stores a ``[style_dim]`` vector, ``cuda_tagged`` makes the storages claim to
    come from ``cuda:0``.
    """
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "latent_avg"}
    la = model.latent_avg.detach().clone()
    if latent_avg_vector:
        la = la[0].clone()
    o = dict(
        opts
        or {
            "input_nc": 4,
            "output_size": model.config.output_size,
            "start_from_encoded_w_plus": True,
            "start_from_latent_avg": False,
            "device": "cuda:0",
            "exp_dir": "/home/someone/exp",
        }
    )
    ckpt = {"state_dict": sd, "opts": argparse.Namespace(**o) if opts_as_namespace else o, "latent_avg": la}
    p = Path(path)
    torch.save(ckpt, p)
    if cuda_tagged:
        _retag_storages_as_cuda(p)
    return p
