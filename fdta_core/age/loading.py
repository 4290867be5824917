"""Safe loading of SAM checkpoints (``sam_ffhq_aging.pt`` or a converted ``.safetensors``).

SAM's file is a torch pickle holding ``state_dict``, ``opts`` (a dict, or an ``argparse.Namespace`` in
some versions) and ``latent_avg``; its tensors were saved from CUDA. It is read with
``torch.load(weights_only=True, map_location="cpu")``; the only extra global admitted is
``argparse.Namespace``, mapped to an inert stand-in class, so nothing in the file is executed. The model
is built on the meta device and the tensors are assigned, so a 2.3 GB file is not held twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFormatError, UnsafeFileError
from .model import SAM, SAMConfig

log = logging.getLogger(__name__)

#: File names the loader node and the docs mention (SAM's release name first).
EXPECTED_FILES: tuple[str, ...] = ("sam_ffhq_aging.pt", "sam_ffhq_aging.safetensors")
#: Extensions the loader accepts.
CHECKPOINT_EXTENSIONS: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".safetensors")
#: safetensors metadata tag written by :func:`save_safetensors`.
FORMAT_TAG = "fdta-sam-age/1"


class _NamespaceStandIn:
    """Inert replacement for ``argparse.Namespace`` while unpickling: it only receives a ``__dict__``."""


@dataclass
class SAMCheckpoint:
    """The tensors and options of a SAM checkpoint (``state_dict`` without ``latent_avg``)."""

    state_dict: dict[str, torch.Tensor]
    latent_avg: torch.Tensor
    opts: dict[str, Any] = field(default_factory=dict)
    config: SAMConfig = field(default_factory=SAMConfig)
    path: str = ""


def _json_safe_opts(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Options reduced to JSON primitives (paths of the training machine and devices dropped)."""
    out: dict[str, Any] = {}
    for k, v in opts.items():
        if k in ("device", "checkpoint_path", "exp_dir"):
            continue
        if isinstance(v, bool | int | float | str) or v is None:
            out[str(k)] = v
        elif isinstance(v, list | tuple) and all(isinstance(x, bool | int | float | str) for x in v):
            out[str(k)] = list(v)
    return out


def _torch_load(path: Path) -> Any:
    safe = [(_NamespaceStandIn, "argparse.Namespace")]
    try:
        try:
            ctx = torch.serialization.safe_globals(safe)
        except (AttributeError, TypeError):  # torch < 2.5: no allow-list context; Namespace opts are refused
            ctx = contextlib.nullcontext()
        with ctx:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"{path} holds Python objects that cannot be loaded without executing code ({exc})",
            where=str(path),
            fix="use SAM's released sam_ffhq_aging.pt, or convert a trusted file with 'fdta age convert' "
            "on a machine where you accept running its code.",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFormatError(
            f"cannot read {path} as a torch checkpoint: {exc}",
            where=str(path),
            fix="re-download sam_ffhq_aging.pt (the file may be truncated).",
        ) from None


def _as_tensor_dict(obj: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFormatError(f"{what} in {path} is not a mapping of tensors", where=str(path))
    return {str(k): v for k, v in obj.items()}


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> SAMConfig:
    """Model widths read from tensor shapes (so tiny test models and the released one load alike)."""
    try:
        n_styles = len({k.split(".")[2] for k in state_dict if k.startswith("encoder.styles.")})
        output_size = 2 ** ((n_styles + 2) // 2)
        stem = int(state_dict["encoder.input_layer.0.weight"].shape[0])
        blocks = [int(state_dict[f"encoder.body.{u}.res_layer.1.weight"].shape[0]) for u in (0, 3, 7, 21)]
        se_red = blocks[0] // int(state_dict["encoder.body.0.res_layer.5.fc1.weight"].shape[0])
        style_dim = int(state_dict["encoder.styles.0.linear.weight"].shape[0])
        channels = {4: int(state_dict["decoder.input.input"].shape[1])}
        for k in range(int(math.log2(output_size)) - 2):
            channels[2 ** (k + 3)] = int(state_dict[f"decoder.convs.{2 * k}.conv.weight"].shape[1])
        n_mlp = len([k for k in state_dict if re.fullmatch(r"decoder\.style\.\d+\.weight", k)])
    except (KeyError, IndexError, ZeroDivisionError) as exc:
        raise ModelFormatError(
            f"the state_dict does not look like a SAM model (missing or odd tensor {exc})",
            fix="pass SAM's sam_ffhq_aging.pt (pSp encoder + StyleGAN2 decoder), not another checkpoint.",
        ) from None
    return SAMConfig(
        output_size=output_size,
        style_dim=style_dim,
        encoder_widths=(stem, *blocks),
        se_reduction=se_red,
        decoder_channels=channels,
        n_mlp=n_mlp,
        pool_size=max(output_size // 4, 1),
    )


def _normalise_latent_avg(latent_avg: Any, config: SAMConfig, path: Path) -> torch.Tensor:
    if not isinstance(latent_avg, torch.Tensor):
        raise ModelFormatError(
            f"{path} has no latent_avg tensor",
            where=str(path),
            fix="SAM checkpoints store latent_avg beside state_dict; use the released sam_ffhq_aging.pt.",
        )
    la = latent_avg.detach().to("cpu", torch.float32)
    if la.ndim == 1 and la.shape[0] == config.style_dim:
        la = la[None].expand(config.n_styles, -1).clone()
    if tuple(la.shape) != (config.n_styles, config.style_dim):
        raise ModelFormatError(
            f"latent_avg has shape {list(latent_avg.shape)}, expected [{config.n_styles}, {config.style_dim}] or [{config.style_dim}]",
            where=str(path),
        )
    return la


def read_checkpoint(path: str | os.PathLike) -> SAMCheckpoint:
    """Read a SAM ``.pt`` or converted ``.safetensors`` file into a :class:`SAMCheckpoint` (CPU tensors)."""
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"{p} is not a file", where=str(p))
    opts: dict[str, Any] = {}
    if p.suffix.lower() == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
            sd = load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelFormatError(f"cannot read {p} as safetensors: {exc}", where=str(p)) from None
        if meta.get("opts"):
            try:
                opts = json.loads(meta["opts"])
            except json.JSONDecodeError:
                opts = {}
        latent_avg = sd.pop("latent_avg", None)
    else:
        obj = _torch_load(p)
        if not isinstance(obj, Mapping) or "state_dict" not in obj:
            raise ModelFormatError(
                f"{p} is not a SAM checkpoint (expected a dict with 'state_dict', 'opts', 'latent_avg')",
                where=str(p),
                fix="use SAM's released sam_ffhq_aging.pt.",
            )
        sd = _as_tensor_dict(obj["state_dict"], p, "state_dict")
        raw_opts = obj.get("opts") or {}
        if isinstance(raw_opts, _NamespaceStandIn):
            raw_opts = dict(vars(raw_opts))
        opts = _json_safe_opts(raw_opts) if isinstance(raw_opts, Mapping) else {}
        latent_avg = obj.get("latent_avg")
        if latent_avg is None:
            latent_avg = sd.pop("latent_avg", None)
        else:
            sd.pop("latent_avg", None)
    config = infer_config(sd)
    return SAMCheckpoint(sd, _normalise_latent_avg(latent_avg, config, p), opts, config, str(p))


def _layout_problems(
    state_dict: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> list[str]:
    ref = {k: v for k, v in reference.items() if k != "latent_avg"}
    missing = [k for k in ref if k not in state_dict]
    unexpected = [k for k in state_dict if k not in ref]
    shapes = [
        f"{k}: {list(state_dict[k].shape)} vs {list(v.shape)}"
        for k, v in ref.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[:3]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {shapes[:3]})")
    return parts


def _layout_error(parts: list[str], path: str = "") -> ModelFormatError:
    return ModelFormatError(
        "the checkpoint does not match SAM's architecture: " + "; ".join(parts),
        where=path or None,
        fix="use SAM's sam_ffhq_aging.pt (the age model), not a pSp/e4e or other checkpoint.",
    )


def check_layout(state_dict: Mapping[str, torch.Tensor], config: SAMConfig) -> None:
    """Raise :class:`ModelFormatError` unless the keys and shapes are exactly those of :class:`SAM`."""
    with torch.device("meta"):
        ref = SAM(config).state_dict()
    parts = _layout_problems(state_dict, ref)
    if parts:
        raise _layout_error(parts)


def build_model(ckpt: SAMCheckpoint, dtype: torch.dtype = torch.float32) -> SAM:
    """A :class:`SAM` on the CPU holding the checkpoint's tensors (strict: every key, every shape).

    The module is built on the meta device (no 2.3 GB random init) and the tensors are assigned.
    """
    with torch.device("meta"):
        model = SAM(ckpt.config)
    parts = _layout_problems(ckpt.state_dict, model.state_dict())
    if parts:
        raise _layout_error(parts, ckpt.path)
    sd = dict(ckpt.state_dict)
    sd["latent_avg"] = ckpt.latent_avg
    model.load_state_dict(sd, strict=True, assign=True)
    model = model.to(dtype=dtype) if dtype != torch.float32 else model.float()
    model.eval().requires_grad_(False)
    return model


def load_sam(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> SAM:
    """Read, check and build a SAM model on the CPU (move it with ComfyUI's model management or ``.to``)."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt, dtype)
    log.info(
        "loaded SAM age model from %s (output %d px, %d styles)",
        path,
        ckpt.config.output_size,
        ckpt.config.n_styles,
    )
    return model


def save_safetensors(ckpt: SAMCheckpoint, out: str | os.PathLike) -> Path:
    """Write the checkpoint as one ``.safetensors`` file (``latent_avg`` as a key; config and options as
    JSON metadata), atomically."""
    from safetensors.torch import save_file

    from ..fsutil import fsync_dir

    check_layout(ckpt.state_dict, ckpt.config)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in ckpt.state_dict.items()}
    tensors["latent_avg"] = ckpt.latent_avg.contiguous()
    meta = {
        "format": FORMAT_TAG,
        "config": json.dumps(ckpt.config.to_dict(), sort_keys=True),
        "opts": json.dumps(_json_safe_opts(ckpt.opts), sort_keys=True),
    }
    out_p = Path(out)
    tmp = out_p.with_name(f"{out_p.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_p)
        fsync_dir(out_p.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_p
