"""Age shifting of a faceset: target planning, batched SAM inference, provenance.

A faceset of aligned 112x112 faces goes to SAM's 256 px frame, through SAM once per (image, target age),
and back to 112x112. Every produced image keeps its identity label and records ``age_target`` and the
``age`` stage in its provenance, so the CSIM filter and the dataset manifest can audit it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FDTAError, InputError, check_choice
from ..faceset import FaceSet, Provenance
from ..seeds import derive_seed
from .frame import faces_to_sam_input, sam_output_to_faces
from .model import SAM, SAMConfig

log = logging.getLogger(__name__)

STAGE = "age"
#: SAM's age channel covers 0..100 years.
AGE_MIN, AGE_MAX = 0.0, 100.0
MODES = ("list", "range", "relative")
SAMPLINGS = ("even", "random")


@dataclass(frozen=True)
class AgeTargets:
    """How target ages are chosen for each input image.

    - ``list``: every image is shown at each age in ``values``.
    - ``range``: ``count`` ages over ``[low, high]`` (whole years): evenly spaced (``sampling="even"``) or
      drawn uniformly (``sampling="random"``) from a seed derived from ``seed``, the identity and the
      image's position among that identity's images, so any chunk draws the same ages on its own.
    - ``relative``: each shift in ``values`` is added to the image's current age (its previous
      ``age_target``, else a numeric ``age`` in its extra or attributes, else ``base_age``).
    Targets are clamped to SAM's 0..100 years.
    """

    mode: str = "list"
    values: tuple[float, ...] = (20.0, 40.0, 60.0)
    low: float = 20.0
    high: float = 70.0
    count: int = 3
    base_age: float = 30.0
    sampling: str = "even"
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(None, "sampling", self.sampling, SAMPLINGS)
        check_choice(None, "mode", self.mode, MODES, what="age mode")
        if self.mode in ("list", "relative") and not self.values:
            raise InputError(
                "no ages given",
                where="ages",
                fix="give comma-separated ages such as '20, 50, 70' (or shifts '-20, +20').",
            )
        if self.mode == "range":
            if self.count < 1:
                raise InputError(f"count must be >= 1, got {self.count}", where="count")
            if self.low > self.high:
                raise InputError(f"range low {self.low} is above high {self.high}", where="age_low")
        for v in self.values if self.mode == "list" else ():
            if not AGE_MIN <= v <= AGE_MAX:
                raise InputError(f"age {v} is outside SAM's 0..100 years", where="ages")


def parse_ages(text: str, *, where: str = "ages") -> tuple[float, ...]:
    """``"20, 40 60"`` or ``"-20, +15"`` -> a tuple of numbers (empty text -> empty tuple)."""
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    out = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise InputError(
                f"'{p}' is not a number", where=where, fix="write numbers separated by commas."
            ) from None
        if not math.isfinite(v):
            raise InputError(f"'{p}' is not a finite number", where=where)
        out.append(v)
    return tuple(out)


def current_age(prov: Provenance, base_age: float) -> tuple[float, str]:
    """The best-known age of an image and where it came from."""
    if prov.age_target is not None:
        return float(prov.age_target), "age_target"
    for key in ("age", "age_estimate", "estimated_age"):
        v = prov.extra.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v), f"extra.{key}"
    m = re.search(r"\d+(\.\d+)?", str(prov.attributes.get("age", "")))
    if m:
        return float(m.group(0)), "attributes.age"
    return float(base_age), "base_age"


def plan_targets(faceset: FaceSet, targets: AgeTargets) -> list[list[tuple[float, dict, dict]]]:
    """For each image, the list of (target age, provenance extra, provenance seeds) to produce."""
    plan: list[list[tuple[float, dict, dict]]] = []
    seen: dict[int, int] = {}
    for prov in faceset.provenance:
        occurrence = seen.get(prov.identity, 0)
        seen[prov.identity] = occurrence + 1
        items: list[tuple[float, dict, dict]] = []
        if targets.mode == "list":
            items = [(float(v), {"age_mode": "list"}, {}) for v in targets.values]
        elif targets.mode == "range" and targets.sampling == "random":
            seed = derive_seed(targets.seed, STAGE, prov.identity, occurrence)
            rng = np.random.default_rng(seed)
            lo, hi = int(math.ceil(targets.low)), int(math.floor(targets.high))
            ages = sorted(int(a) for a in rng.integers(lo, max(hi, lo) + 1, size=targets.count))
            items = [(float(a), {"age_mode": "range", "age_sampling": "random"}, {STAGE: seed}) for a in ages]
        elif targets.mode == "range":
            if targets.count == 1:
                ages = [round((targets.low + targets.high) / 2)]
            else:
                ages = [round(v) for v in np.linspace(targets.low, targets.high, targets.count)]
            items = [(float(a), {"age_mode": "range", "age_sampling": "even"}, {}) for a in ages]
        else:
            base, src = current_age(prov, targets.base_age)
            for shift in targets.values:
                t = min(max(base + shift, AGE_MIN), AGE_MAX)
                extra = {"age_mode": "relative", "age_shift": shift, "age_base": base, "age_base_source": src}
                items.append((float(round(t)), extra, {}))
        plan.append([(min(max(a, AGE_MIN), AGE_MAX), e, sd) for a, e, sd in items])
    return plan


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


@torch.inference_mode()
def age_faces(
    model: SAM,
    faces: np.ndarray,
    ages: Sequence[float],
    *,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    index: Sequence[int] | np.ndarray | None = None,
    out: np.ndarray | None = None,
    out_index: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Age aligned 112x112 uint8 faces ``[N,112,112,3]``, face i to ``ages[i]``; returns ``[N,112,112,3]`` uint8.

    With ``index``, job i ages ``faces[index[i]]`` (the faces are gathered per batch, never copied
    whole); with ``out`` and ``out_index``, job i's result is written to ``out[out_index[i]]`` and
    ``out`` is returned, so a caller that assembles a larger faceset needs no second copy. Runs in
    batches of ``batch_size`` on the model's device and dtype (unless given); ``progress(done, total)``
    is called before the first batch and after each one, and whatever it raises (an interrupt)
    propagates.
    """
    src = np.arange(int(faces.shape[0])) if index is None else np.asarray(index, np.int64)
    n = int(src.shape[0])
    if len(ages) != n:
        raise InputError(f"{len(ages)} ages for {n} faces", where="age_faces")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}", where="batch_size")
    if out is None:
        out = np.empty((n, 112, 112, 3), np.uint8)
        dst = np.arange(n)
    else:
        dst = np.asarray(out_index if out_index is not None else np.arange(n), np.int64)
        if dst.shape != (n,):
            raise InputError(f"{len(dst)} output positions for {n} faces", where="age_faces")
    m_dev, m_dtype = model_device_dtype(model)
    device = torch.device(device) if device is not None else m_dev
    dtype = dtype or m_dtype
    if progress is not None and n:
        progress(0, n)  # lets a cancel requested before this node started stop it at once
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = faces[src[start:stop]]  # only this batch is gathered (and made float below)
        x = faces_to_sam_input(torch.from_numpy(np.ascontiguousarray(batch)).to(device), dtype=dtype)
        y = model.transform(x, torch.tensor([float(a) for a in ages[start:stop]]), resize=False)
        out[dst[start:stop]] = sam_output_to_faces(y).numpy()
        if progress is not None:
            progress(stop, n)
    return out


def shift_faceset(
    model: SAM,
    faceset: FaceSet,
    targets: AgeTargets,
    *,
    keep_originals: bool = True,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> FaceSet:
    """A new faceset with aged variants of every image (each original first when ``keep_originals``).

    Each variant's provenance is its original's, with the ``age`` stage appended, ``age_target`` set and
    the mode details in ``extra``; labels and source faces are unchanged. The output array is allocated
    once and filled batch by batch: the stage holds its input, its output and one batch, nothing more.
    """
    plan = plan_targets(faceset, targets)
    total = sum(len(items) + (1 if keep_originals else 0) for items in plan)
    if not total:
        return faceset.derived(np.zeros((0, 112, 112, 3), np.uint8), np.zeros((0,), np.int64), [])
    images = np.empty((total, 112, 112, 3), np.uint8)
    labels = np.empty((total,), np.int64)
    prov: list[Provenance] = []
    job_src: list[int] = []
    job_dst: list[int] = []
    job_age: list[float] = []
    for i, items in enumerate(plan):
        if keep_originals:
            images[len(prov)] = faceset.images[i]
            labels[len(prov)] = int(faceset.labels[i])
            prov.append(faceset.provenance[i])
        for age, extra, seeds in items:
            job_src.append(i)
            job_dst.append(len(prov))
            job_age.append(age)
            labels[len(prov)] = int(faceset.labels[i])
            prov.append(
                faceset.provenance[i].derive(
                    STAGE, age_target=float(age), seeds=seeds, extra={**extra, "age_source_index": i}
                )
            )
    age_faces(
        model,
        faceset.images,
        job_age,
        index=job_src,
        out=images,
        out_index=job_dst,
        batch_size=batch_size,
        progress=progress,
        device=device,
        dtype=dtype,
    )
    return faceset.derived(images, labels, prov)


def activation_bytes_per_image(config: SAMConfig, dtype: torch.dtype) -> int:
    """A deliberately generous estimate of the working memory one image needs during a forward pass.

    The largest tensors are the decoder's top levels (channels x side^2, with the 2x zero-inserted
    blur input of the upsampling conv), times a safety factor for the tensors alive at once.
    """
    itemsize = torch.empty(0, dtype=dtype).element_size()
    peak = 0
    for side, ch in config.decoder_channels.items():
        prev = config.decoder_channels.get(side // 2, ch)
        peak = max(peak, (ch + prev) * (side + 1) ** 2)
    enc = config.encoder_widths[0] * 256 * 256 * 8  # encoder stem maps at 256 px, a few alive at once
    return int((4 * peak + enc) * itemsize)


def choose_batch_size(
    free_bytes: int, config: SAMConfig, dtype: torch.dtype, requested: int, reserve: float = 0.8
) -> int:
    """The largest batch <= ``requested`` whose estimated working memory fits in ``reserve * free_bytes`` (>= 1)."""
    per = activation_bytes_per_image(config, dtype)
    fit = int(max(free_bytes, 0) * reserve) // max(per, 1)
    return max(1, min(int(requested), fit))


class AgeMemoryError(FDTAError, RuntimeError):
    """The age model (or one batch through it) does not fit on the chosen device."""


def placement_error(
    needed_bytes: int,
    available_bytes: int,
    device: str,
    *,
    where: str = "FDTAAgeShifter",
    during: str = "loading",
) -> AgeMemoryError:
    """A clear out-of-memory error: what was needed, what the device has, and what to change."""
    gib = 1024**3
    return AgeMemoryError(
        f"the SAM age model cannot be placed on {device} while {during}: it needs about "
        f"{needed_bytes / gib:.1f} GiB (weights + one batch), {available_bytes / gib:.1f} GiB are available",
        where=where,
        fix="lower batch_size (0 picks it from free memory), load the model with dtype fp16 on CUDA, free other "
        "models (ComfyUI's 'Unload Models'), or choose device 'cpu' in FDTAAgeLoader.",
    )
