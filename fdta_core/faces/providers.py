"""onnxruntime glue shared by the face models: execution providers, sessions and input blobs.

onnxruntime is imported lazily, so importing this module never fails on a machine without it; the first
session says what to install.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError

log = logging.getLogger(__name__)

#: Provider short names accepted by :func:`resolve_providers` (``auto`` picks CUDA when available).
PROVIDER_CHOICES = ("auto", "CPU", "CUDA", "TensorRT", "ROCm", "DirectML", "CoreML", "OpenVINO")


#: onnxruntime builds that install the same ``onnxruntime`` package; two of them in one Python overwrite each
#: other's files, so whichever was installed last wins, and uninstalling either breaks the other.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
    "onnxruntime-rocm",
)
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def installed_onnxruntime_builds() -> list[str]:
    """The onnxruntime distributions installed in this Python (by their metadata, without importing them)."""
    from importlib import metadata

    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def onnxruntime_conflict() -> str | None:
    """A warning when more than one onnxruntime build is installed (e.g. ``onnxruntime`` and
    ``onnxruntime-gpu``, the clash that many face packs cause), saying which to uninstall; else None."""
    builds = installed_onnxruntime_builds()
    if len(builds) < 2:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in builds else builds[-1]
    drop = [b for b in builds if b != keep]
    return (
        f"[FDTA] both {' and '.join(builds)} are installed in this Python; they install the same files, so "
        f"the face models may run on the wrong build or fail to load. Keep {keep} (it runs on the CPU too): "
        f"pip uninstall -y {' '.join(drop)} && pip install --force-reinstall --no-deps {keep}"
    )


def cuda_device_visible() -> bool:
    """Whether this process sees a CUDA device. onnxruntime-gpu lists CUDAExecutionProvider even on a machine
    without a GPU or CUDA libraries (it then logs an error and runs on the CPU), so its list alone cannot
    decide; torch (always present beside this pack) can."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return True
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver install: treat as no device
        return False


def available_providers() -> list[str]:
    """onnxruntime's usable execution providers (empty when onnxruntime is not installed): CUDA and
    TensorRT only where a CUDA device is visible, since onnxruntime-gpu lists them everywhere."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    avail = list(ort.get_available_providers())
    if any(p in avail for p in _GPU_PROVIDERS) and not cuda_device_visible():
        avail = [p for p in avail if p not in _GPU_PROVIDERS]
    return avail


def provider_choices() -> list[str]:
    """Choices for a provider widget: ``auto`` first, then the short names onnxruntime offers here."""
    avail = available_providers()
    names = [p.removesuffix("ExecutionProvider") for p in avail if p != "AzureExecutionProvider"]
    return ["auto", *[n for n in PROVIDER_CHOICES[1:] if n in names]] or ["auto", "CPU"]


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Turn ``auto`` / ``CPU`` / ``CUDA`` / full provider names into the list passed to onnxruntime.

    ``auto`` takes CUDA when a CUDA device is visible and onnxruntime offers its provider, else CPU. A provider that is not available is not
    an error: it falls back to CPU with a warning that lists what is available (the batch goes on).
    """
    avail = available_providers()
    if isinstance(providers, str):
        requested = [providers]
    else:
        requested = list(providers)
    if not requested or requested == ["auto"]:
        if "CUDAExecutionProvider" in avail:
            log.info(
                "[FDTA] faces: ONNX provider auto -> CUDA (a CUDA device and onnxruntime's CUDA provider)"
            )
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.info(
            "[FDTA] faces: ONNX provider auto -> CPU (no CUDA device or no CUDA provider; usable: %s)", avail
        )
        return ["CPUExecutionProvider"]
    out: list[str] = []
    for name in requested:
        full = name if name.endswith("ExecutionProvider") else f"{name}ExecutionProvider"
        if full in avail:
            out.append(full)
        else:
            log.warning(
                "[FDTA] faces: ONNX provider %s is not usable here (no CUDA device, or not in this "
                "onnxruntime build; usable: %s); using CPU instead. For CUDA install onnxruntime-gpu "
                "instead of onnxruntime (never both).",
                name,
                ", ".join(avail) or "none",
            )
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelFormatError(
            "onnxruntime is not installed, so the face models cannot run",
            where="faces",
            fix="pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA) into ComfyUI's Python.",
        ) from exc
    return ort


def onnx_session(path: Path, providers: list[str], threads: int = 0):
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelFormatError(
            f"onnxruntime cannot load {path}: {exc}",
            where="faces",
            fix="re-download the file; it may be truncated or not an ONNX model.",
        ) from exc


def mxnet_normalisation(path: Path) -> bool:
    """True when the graph starts with Sub and Mul nodes (a model converted from MXNet that normalises
    inside the graph, so it must be fed raw 0-255 values), as insightface checks it."""
    try:
        import onnx
    except ImportError:
        log.warning(
            "[FDTA] faces: package 'onnx' missing; assuming %s expects (x-127.5)/127.5 input", path.name
        )
        return False
    model = onnx.load(str(path), load_external_data=False)
    find_sub = find_mul = False
    ops = 0  # position among non-Constant nodes (exporters put constants first)
    for nid, node in enumerate(model.graph.node[:8]):
        name = (node.name or "").lstrip("/")
        if node.op_type == "Constant":
            continue
        if name.startswith(("Sub", "_minus")) or (ops < 2 and node.op_type == "Sub"):
            find_sub = True
        if name.startswith(("Mul", "_mul")) or (ops < 3 and node.op_type == "Mul"):
            find_mul = True
        if nid < 3 and name == "bn_data":
            find_sub = find_mul = True
        ops += 1
    return find_sub and find_mul


def static_dims(shape: Sequence[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def to_blob(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> float32 NCHW ``(x - mean) / std`` (the models take RGB).

    The transpose happens on the uint8 array and the conversion writes the NCHW float copy in one pass;
    then two in-place operations: this keeps pre-processing well below the model's own cost.
    """
    x = images.transpose(0, 3, 1, 2).astype(np.float32, order="C")
    if mean:
        x -= np.float32(mean)
    if std != 1.0:
        x *= np.float32(1.0 / std)
    return x


class BatchedModel:
    """An onnxruntime session with one image input and one output, run over uint8 RGB images in
    batches (a model exported with a fixed batch gets its last batch padded with zeros).

    Subclasses set ``mean`` and ``std`` (see :func:`to_blob`) after checking the model's signature.
    """

    role = ""
    mean: float = 127.5
    std: float = 127.5

    def __init__(self, path: Path, session: Any) -> None:
        self.path = path
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = inp.shape
        self.input_dims = static_dims(inp.shape)
        self.outputs = session.get_outputs()
        self.output_name = self.outputs[0].name
        self.fixed_batch = self.input_dims[0] if self.input_dims else None  # None = dynamic

    def run_batches(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """The model's output for ``images`` [N, H, W, 3] uint8, ``batch_size`` at a time."""
        bs = self.fixed_batch or max(1, int(batch_size))
        out = []
        for s in range(0, len(images), bs):
            chunk = images[s : s + bs]
            pad = (self.fixed_batch - len(chunk)) if self.fixed_batch else 0
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            res = self.session.run(
                [self.output_name], {self.input_name: to_blob(chunk, self.mean, self.std)}
            )[0]
            out.append(res[: len(res) - pad] if pad else res)
        return np.concatenate(out)
