"""Batched generation of styled faces: many (identity, style) pairs through DDIM at once.

The ID encoder runs once per identity (its output does not depend on the style), the style path once
per pair, and the UNet on batches that mix identities and styles. Every image draws its own noise from
its own seed, so batching never changes an image. On CUDA the denoiser can run in fp16/bf16 and
channels-last; the DDIM arithmetic always stays in float32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .ddim import DEFAULT_ETA, DEFAULT_STEPS, PerSampleNoise, ddim_sample, from_uint8, to_uint8
from .model import Condition, STGModel
from .solvers import DDIM, check_sampler, multistep_sample

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; half precision on CPU falls back to fp32 (logged)."""
    if isinstance(name, torch.dtype):
        dtype = name
    elif name == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    elif name in _DTYPES:
        dtype = _DTYPES[name]
    else:
        raise InputError(
            f"unknown precision '{name}'", where="STG precision", fix="use auto, fp32, fp16 or bf16."
        )
    if device.type == "cpu" and dtype == torch.float16:
        log.info("fp16 is slow or unsupported on CPU; using fp32")
        dtype = torch.float32
    return dtype


@dataclass
class GenerationRequest:
    """Pairs to render: pair i uses ``id_images[id_index[i]]`` with ``style_images[i]`` and ``seeds[i]``."""

    id_images: np.ndarray  # [I, 112, 112, 3] uint8, one per identity
    id_index: np.ndarray  # [N] int
    #: [N, 112, 112, 3] uint8, or a lazy sequence whose slices are such arrays (a bank's ``gather``):
    #: the sampler takes one batch at a time
    style_images: np.ndarray | Sequence[np.ndarray]
    seeds: Sequence[int]  # [N]

    def validate(self) -> None:
        n = len(self.style_images)
        if len(self.id_index) != n or len(self.seeds) != n:
            raise InputError(
                f"{n} style images, {len(self.id_index)} identity indices and {len(self.seeds)} seeds: need one each",
                where="STG generation",
            )
        arrays = [("id_images", self.id_images)]
        if isinstance(self.style_images, np.ndarray):
            arrays.append(("style_images", self.style_images))
        for name, arr in arrays:
            if arr.ndim != 4 or arr.shape[1:] != (112, 112, 3) or arr.dtype != np.uint8:
                raise InputError(
                    f"{name} must be uint8 [N,112,112,3], got {arr.dtype} {list(arr.shape)}",
                    where="STG generation",
                )
        if n and (int(np.min(self.id_index)) < 0 or int(np.max(self.id_index)) >= len(self.id_images)):
            raise InputError("identity index out of range", where="STG generation")


class STGSampler:
    """Runs an :class:`STGModel` on a device with a precision and memory layout.

    The model must already sit on ``device`` (in ComfyUI, ComfyUI's model manager moves it there).
    """

    def __init__(
        self,
        model: STGModel,
        device: torch.device | str | None = None,
        dtype: str | torch.dtype = "auto",
        *,
        channels_last: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = resolve_dtype(dtype, self.device)
        self.channels_last = (self.device.type == "cuda") if channels_last is None else channels_last
        self._prepared = False

    def _prepare(self) -> None:
        if self._prepared:
            return
        m = self.model
        if next(m.parameters()).device != self.device:
            m.to(self.device)
        if self.channels_last:
            # a layout change only: values and the caller's fp32 weights stay as they are
            m.unet.to(memory_format=torch.channels_last)
        self._prepared = True

    def _autocast(self):
        """Half precision through autocast, so the (shared, ComfyUI-managed) weights are never cast in place.
        GroupNorm and the attention softmax stay in float32 inside the layers."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def id_condition(self, id_images: np.ndarray, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """ID vector and tokens of each identity image (float32, on the device)."""
        self._prepare()
        vecs, toks = [], []
        for s in range(0, len(id_images), batch_size):
            v, t = self.model.id_encoder(from_uint8(id_images[s : s + batch_size], self.device))
            vecs.append(v)
            toks.append(t)
        return torch.cat(vecs), torch.cat(toks)

    @torch.no_grad()
    def generate(
        self,
        req: GenerationRequest,
        *,
        steps: int = DEFAULT_STEPS,
        eta: float = DEFAULT_ETA,
        batch_size: int = 16,
        progress: Callable[[int, int], None] | None = None,
        solver: str = DDIM,
    ) -> np.ndarray:
        """Render every pair; returns uint8 ``[N, 112, 112, 3]`` RGB in request order.

        ``solver``: ``ddim`` (DCFace's, with ``eta``) or a deterministic multistep solver
        (``dpmpp_2m``, ``unipc``: :mod:`.solvers`; ``eta`` does not apply).

        ``progress(done, total)`` counts denoiser evaluations (pairs x steps); whatever it raises
        (ComfyUI's interrupt) propagates.
        """
        req.validate()
        check_sampler(solver, "STG sampler")
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}", where="STG batch_size")
        self._prepare()
        n = len(req.style_images)
        out = np.zeros((n, 112, 112, 3), np.uint8)
        if n == 0:
            return out
        # the ID encoder runs in the denoiser's batch size too: its activations, not the chunk, set the peak
        id_vec, id_tok = self.id_condition(req.id_images, batch_size=batch_size)
        total = n * steps
        done = 0
        unet = self.model.unet
        for s in range(0, n, batch_size):
            sl = slice(s, min(n, s + batch_size))
            b = sl.stop - sl.start
            idx = torch.as_tensor(np.asarray(req.id_index[sl], np.int64), device=self.device)
            style = self.model.style_tokens(from_uint8(req.style_images[sl], self.device))
            cond = Condition(id_vector=id_vec[idx], context=self.model.style_head.context(id_tok[idx], style))

            def eps_fn(x: torch.Tensor, t: int, cond: Condition = cond) -> torch.Tensor:
                xin = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
                with self._autocast():
                    return unet(xin, t, cond.id_vector, cond.context)[:, :3].float()

            base = done

            def on_step(i: int, total_steps: int, base: int = base, b: int = b) -> None:
                if progress is not None:
                    progress(base + i * b, total)

            if solver == DDIM:
                x = ddim_sample(
                    eps_fn,
                    b,
                    PerSampleNoise(req.seeds[sl]),
                    steps=steps,
                    eta=eta,
                    device=self.device,
                    on_step=on_step,
                )
            else:
                x = multistep_sample(
                    eps_fn,
                    b,
                    PerSampleNoise(req.seeds[sl]),
                    sampler=solver,
                    steps=steps,
                    device=self.device,
                    on_step=on_step,
                )
            out[sl] = to_uint8(x)
            done += b * steps
        return out
