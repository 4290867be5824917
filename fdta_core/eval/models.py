"""Load a face-recognition model for evaluation: a ``.pt``/``.pth`` IResNet checkpoint or an ONNX file.

Both return an :data:`~fdta_core.eval.verification.EmbedFn` (RGB uint8 images -> unnormalised
embeddings), so the protocol code never knows which runtime produced the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError, ModelFormatError
from ..faces.providers import mxnet_normalisation, onnx_session, resolve_providers
from .verification import EmbedFn

if TYPE_CHECKING:
    import torch

    from ..iresnet import IResNet

log = logging.getLogger(__name__)


def load_state(path: str | Path) -> tuple[dict, dict | None]:
    """``(backbone state dict, arch or None)`` from a checkpoint, loaded with ``weights_only=True``.

    Accepts a bare state dict (arcface_torch ``backbone.pth``), ``{"backbone": ..., "arch": ...}`` as
    ``fdta train`` writes ``model.pt``, and ``module.``-prefixed keys from a DDP wrapper.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found", fix="pass a .pt/.pth checkpoint or an .onnx file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; all mean "cannot be loaded safely"
        raise ModelFormatError(
            f"{path} cannot be loaded as a weights-only checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
            fix="pass a state dict saved with torch.save(model.state_dict()) or a model.pt from fdta train.",
        ) from None
    arch = None
    if isinstance(obj, Mapping) and "backbone" in obj and isinstance(obj["backbone"], Mapping):
        arch = obj.get("arch")
        obj = obj["backbone"]
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    return state, (dict(arch) if isinstance(arch, Mapping) else None)


def torch_embedder(model, device: str = "cpu") -> EmbedFn:
    """Wrap an IResNet (RGB in [-1, 1]) as an :data:`EmbedFn`."""
    import torch

    model = model.to(device).eval()

    def embed(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        x = x.permute(0, 3, 1, 2).float().sub_(127.5).div_(127.5)
        with torch.inference_mode():
            return model(x).float().cpu().numpy()

    return embed


def onnx_embedder(path: str | Path, providers: str | Sequence[str] = "auto") -> tuple[EmbedFn, int]:
    """``(embed, input size)`` for an insightface-convention ONNX model (N x 3 x S x S RGB).

    Providers and sessions as the face models make them (``auto`` takes CUDA when onnxruntime offers
    it); as insightface does, a graph converted from MXNet carries its own normalisation and gets raw
    0..255 values, any other gets (x - 127.5) / 127.5.
    """
    path = Path(path)
    prov = resolve_providers(providers)
    raw = mxnet_normalisation(path)
    log.info("ONNX %s on %s (%s input)", path, prov, "raw 0-255" if raw else "normalised")
    sess = onnx_session(path, prov)
    inp = sess.get_inputs()[0]
    fixed_batch = isinstance(inp.shape[0], int) and inp.shape[0] > 0
    size = inp.shape[2] if isinstance(inp.shape[2], int) else 112

    def embed(images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
        if not raw:
            x = (x - 127.5) / 127.5
        if fixed_batch and x.shape[0] != inp.shape[0]:
            return np.concatenate([sess.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))])
        return sess.run(None, {inp.name: x})[0]

    return embed, int(size)


def load_backbone(path: str | Path) -> IResNet:
    """The IResNet of a checkpoint (see :func:`load_state`), weights loaded strictly, in eval mode."""
    from ..iresnet import backbone_from_state_dict  # imports torch

    state, arch = load_state(path)
    return backbone_from_state_dict(state, arch).eval()


def load_model_embedder(
    path: str | Path,
    device: str = "cpu",
    *,
    providers: str | Sequence[str] = "auto",
    prepare: Callable[[IResNet], torch.nn.Module] | None = None,
) -> tuple[EmbedFn, int]:
    """``(embed, input size)`` for a ``.onnx`` file (run with ``providers``) or a torch IResNet
    checkpoint (run on ``device``).

    ``prepare`` receives the loaded torch network and returns the module to run (ComfyUI's nodes use it
    to hand the network to the model manager); ONNX files never reach it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found", fix="pass a .pt/.pth checkpoint or an .onnx file.")
    if path.suffix.lower() == ".onnx":
        return onnx_embedder(path, providers)
    net = load_backbone(path)
    size = net.input_size
    return torch_embedder(prepare(net) if prepare is not None else net, device), size
