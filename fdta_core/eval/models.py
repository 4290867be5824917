"""Load a face-recognition model for evaluation: a ``.pt``/``.pth`` IResNet checkpoint or an ONNX file.

Both return an :data:`~fdta_core.eval.verification.EmbedFn` (RGB uint8 images -> unnormalised
embeddings), so the protocol code never knows which runtime produced the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelFormatError
from .verification import EmbedFn

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


def onnx_embedder(path: str | Path, providers: list[str] | None = None) -> EmbedFn:
    """Wrap an insightface-convention ONNX model (N x 3 x 112 x 112 RGB) as an :data:`EmbedFn`.

    As insightface does, a graph that starts with Sub/Mul nodes carries its own normalisation and gets
    raw 0..255 values; any other gets (x - 127.5) / 127.5.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelFormatError(
            f"evaluating an ONNX model needs onnxruntime ({exc})",
            fix="pip install onnxruntime (or onnxruntime-gpu)",
        ) from None
    try:
        import onnx

        ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node[:8]]
    except ImportError:
        log.warning("package 'onnx' not installed: assuming %s expects (x - 127.5) / 127.5 input", path)
        ops = []
    raw = "Sub" in ops and "Mul" in ops
    avail = ort.get_available_providers()
    providers = [p for p in (providers or ("CUDAExecutionProvider", "CPUExecutionProvider")) if p in avail]
    log.info("ONNX %s on %s (%s input)", path, providers, "raw 0-255" if raw else "normalised")
    sess = ort.InferenceSession(str(path), providers=providers)
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

    embed.input_size = size  # type: ignore[attr-defined]
    return embed


def load_model_embedder(path: str | Path, device: str = "cpu") -> tuple[EmbedFn, int]:
    """``(embed, input size)`` for a ``.onnx`` file or a torch IResNet checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found", fix="pass a .pt/.pth checkpoint or an .onnx file.")
    if path.suffix.lower() == ".onnx":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
        embed = onnx_embedder(path, providers)
        return embed, getattr(embed, "input_size", 112)
    from ..train.iresnet import backbone_from_state_dict

    state, arch = load_state(path)
    model = backbone_from_state_dict(state, arch)
    return torch_embedder(model, device), model.input_size
