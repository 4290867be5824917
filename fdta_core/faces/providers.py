"""onnxruntime glue shared by the face models: execution providers, sessions and input blobs.

onnxruntime is imported lazily, so importing this module never fails on a machine without it; the first
session says what to install.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from ..imagecodec import _cv2  # OpenCV, or None without it (numpy then converts)

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


_PREP: concurrent.futures.ThreadPoolExecutor | None = None
_PREP_LOCK = threading.Lock()


def _prep_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One helper thread per process that converts the next batch while the model runs the current."""
    global _PREP
    with _PREP_LOCK:
        if _PREP is None:
            _PREP = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fdta-face-prep")
        return _PREP


_SCRATCH = threading.local()


def _planes(rows: int, cols: int) -> list[np.ndarray]:
    """Three uint8 planes for :func:`to_blob`'s de-interleave, kept per thread and reused: a fresh
    allocation per batch costs more in page faults than the split itself."""
    cache = getattr(_SCRATCH, "planes", None)
    if cache is None or cache[0].shape != (rows, cols):
        cache = _SCRATCH.planes = [np.empty((rows, cols), np.uint8) for _ in range(3)]
    return cache


def to_blob(images: np.ndarray, mean: float, std: float, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> float32 NCHW ``(x - mean) / std`` (the models take RGB).

    With OpenCV: one ``split`` of the whole batch into three reused channel planes (SIMD de-interleave),
    then per plane one ``addWeighted`` (``x / std - mean / std``, SIMD, uint8 in, float32 out) straight
    into the NCHW output. Measured on 2 cores, 512 faces not in cache, batch 32: 10 us a face against 33
    for numpy's transpose-and-convert plus two in-place passes (the numpy path, kept for a Python without
    OpenCV); the two differ by at most one float32 rounding step (tested). ``out``: a float32 [N,3,H,W]
    buffer to fill (a pipeline reuses two), else a new array.
    """
    n, h, w, c = images.shape
    if out is None:
        out = np.empty((n, c, h, w), np.float32)
    elif out.shape != (n, c, h, w) or out.dtype != np.float32:
        raise ValueError(f"to_blob: out has shape {out.shape} {out.dtype}, need {(n, c, h, w)} float32")
    cv2 = _cv2()
    if cv2 is None or c != 3 or n == 0:
        np.copyto(out, images.transpose(0, 3, 1, 2), casting="unsafe")
        if mean:
            out -= np.float32(mean)
        if std != 1.0:
            out *= np.float32(1.0 / std)
        return out
    planes = _planes(n * h, w)
    got = cv2.split(np.ascontiguousarray(images).reshape(n * h, w, 3), planes)
    scale, shift = 1.0 / float(std), -float(mean) / float(std)
    for ch, plane in enumerate(got):
        src = plane.reshape(n, h * w)
        dst = out[:, ch].reshape(n, h * w)  # a view: each image's plane is contiguous
        res = cv2.addWeighted(src, scale, src, 0.0, shift, dst=dst, dtype=cv2.CV_32F)
        if not np.shares_memory(res, dst):  # OpenCV allocated its own output: copy it in
            dst[...] = res
    return out


def _host(value: Any, pad: int) -> np.ndarray:
    """A batch's output as a numpy array (an OrtValue on the device is copied), padding rows cut."""
    arr = value if isinstance(value, np.ndarray) else value.numpy()
    return arr[: len(arr) - pad] if pad else arr


class BatchedModel:
    """An onnxruntime session with one image input and one output, run over uint8 RGB images in
    batches (a model exported with a fixed batch gets its last batch padded with zeros).

    Subclasses set ``mean`` and ``std`` (see :func:`to_blob`) after checking the model's signature.
    """

    role = ""
    #: run batches through onnxruntime's IOBinding (None: on CUDA only; True also works on the CPU)
    iobinding: bool | None = None
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

    @property
    def device(self) -> str:
        """``cuda`` when the session runs on a CUDA provider (inputs and outputs then go through
        IOBinding), else ``cpu``."""
        try:
            provs = self.session.get_providers()
        except Exception:  # a stand-in session in tests
            return "cpu"
        return "cuda" if provs and provs[0] in _GPU_PROVIDERS else "cpu"

    def _blob(
        self, parts: Sequence[np.ndarray], start: int, stop: int, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """Batch ``[start, stop)`` of the parts laid end to end, converted (and padded to a fixed batch)
        into ``out`` (a buffer of at least that many images) when given."""
        pieces, off = [], 0
        for arr in parts:
            lo, hi = max(start - off, 0), min(stop - off, len(arr))
            if lo < hi:
                pieces.append(arr[lo:hi])
            off += len(arr)
        chunk = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        pad = (self.fixed_batch - len(chunk)) if self.fixed_batch else 0
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
        n, h, w, c = chunk.shape
        fits = out is not None and len(out) >= n and out.shape[1:] == (c, h, w)
        return to_blob(chunk, self.mean, self.std, out[:n] if fits else None), pad

    def run_batches(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        batch_size: int = 32,
        progress: Any = None,
        on_batch: Callable[[int, int, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """The model's output for ``images`` [N, H, W, 3] uint8 (or several such arrays, taken end to end
        as one stream: one pipeline for a faceset and its source faces), ``batch_size`` at a time.

        ``on_batch(start, stop, output)``: called for every batch, in order, on the helper thread while
        the model runs the next batch, so that a caller's per-image work (the CSIM filter's cosines and
        provenance) costs no time of its own on a second core; an exception in it is raised here. It
        runs on the one helper thread, so it must not run a model itself (that would wait on itself).

        Pre-processing (uint8 NHWC -> float NCHW, normalised) of the next batch runs in a helper thread
        while onnxruntime runs the current one (both release the GIL), so on the CPU the conversion,
        which costs about as much as a small model, is hidden behind inference; measured faster than
        folding the conversion into the graph, which onnxruntime runs on its own (pinned) threads. On
        CUDA the batches go through IOBinding and the outputs stay on the device until the end (with
        ``on_batch``, each batch's output is copied to the host for it: a few KB).
        ``progress(done, total)`` is called after each batch."""
        parts = [images] if isinstance(images, np.ndarray) else list(images)
        n = sum(len(p) for p in parts)
        bs = self.fixed_batch or max(1, int(batch_size))
        spans = [(s, min(n, s + bs)) for s in range(0, n, bs)]
        if not spans:
            return np.zeros((0, *([d or 0 for d in static_dims(self.outputs[0].shape)[1:]])), np.float32)
        bound = self.iobinding if self.iobinding is not None else self.device == "cuda"
        run = self._run_bound if bound else self._run_plain
        done: list[tuple[Any, int]] = []  # (output, padding rows); OrtValues stay on the device
        if len(spans) == 1:
            blob, pad = self._blob(parts, *spans[0])
            done.append((run(blob), pad))
        else:
            # two buffers, reused: the helper fills one while onnxruntime reads the other (the model is
            # done with a buffer when run() returns; IOBinding copies its input during the run)
            first = parts[0] if len(parts[0]) else next(p for p in parts if len(p))
            h, w = first.shape[1:3]
            bufs = [np.empty((bs, first.shape[3], h, w), np.float32) for _ in range(2)]
            ex = _prep_pool()
            fut = ex.submit(self._blob, parts, *spans[0], bufs[0])
            handed: list[concurrent.futures.Future] = []
            try:
                for k in range(len(spans)):
                    blob, pad = fut.result()
                    if k + 1 < len(spans):
                        fut = ex.submit(self._blob, parts, *spans[k + 1], bufs[(k + 1) % 2])
                    done.append((run(blob), pad))
                    if on_batch is not None:  # the helper takes it after the next batch's conversion
                        done[-1] = (_host(done[-1][0], pad), 0)
                        handed.append(ex.submit(on_batch, *spans[k], done[-1][0]))
                    if progress is not None:
                        progress(spans[k][1], n)
            finally:
                for h in handed:  # in order; the first failure is raised (after the others finished)
                    h.exception()
            for h in handed:
                h.result()
        res = [_host(value, pad) for value, pad in done]  # on CUDA: the copies, after every batch was queued
        if on_batch is not None and len(spans) == 1:
            on_batch(*spans[0], res[0])
        return res[0] if len(res) == 1 else np.concatenate(res)

    def _run_plain(self, blob: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: blob})[0]

    def _run_bound(self, blob: np.ndarray) -> Any:
        """One batch through IOBinding: the input is copied to the device, the output stays there (an
        OrtValue) so that the next batch does not wait for a device -> host copy."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, blob)
        binding.bind_output(self.output_name, self.device)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0]
