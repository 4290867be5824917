"""ONNX face models of an insightface pack: SCRFD detector, ArcFace recogniser, gender/age.

A pack is a folder ``<insightface root>/models/<pack>/`` (the layout InstantID, PuLID and IPAdapter use),
e.g. ``buffalo_l`` with ``det_10g.onnx``, ``w600k_r50.onnx`` and ``genderage.onnx``. The models run
through onnxruntime directly (imported lazily); the pre- and post-processing follows insightface's own
wrappers so that embeddings match what users of insightface get, without needing its Python package.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FDTAError, InputError, ModelFormatError, ModelNotFoundError
from ..faceset import FACE_SIZE, FaceSet, Provenance
from .align import align_face, crop_transform, ensure_rgb_uint8

log = logging.getLogger(__name__)

#: Canonical file names of buffalo_l (the default pack); other packs are recognised by signature.
DEFAULT_FILES: dict[str, str] = {
    "detector": "det_10g.onnx",
    "recognizer": "w600k_r50.onnx",
    "genderage": "genderage.onnx",
}
#: Files of known packs that are not used here (dense landmark models).
_IGNORED_PREFIXES = ("1k3d68", "2d106det")
#: Provider short names accepted by :func:`resolve_providers` (``auto`` picks CUDA when available).
PROVIDER_CHOICES = ("auto", "CPU", "CUDA", "TensorRT", "ROCm", "DirectML", "CoreML", "OpenVINO")
#: Approximate face box of an aligned 112x112 crop (x1, y1, x2, y2), used to feed gender/age without
#: running the detector on faces that are already aligned.
ALIGNED_FACE_BOX = (16.0, 24.0, 96.0, 104.0)


# ----------------------------------------------------------------------------- records
@dataclass
class Detection:
    """One detected face: box ``(x1, y1, x2, y2)`` in input pixels, score in [0, 1], 5 landmarks."""

    bbox: np.ndarray
    score: float
    kps: np.ndarray

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels (what ``min_face_size`` compares)."""
        return float(min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))


@dataclass
class FaceAnalysis:
    """A detection with its aligned crop, embedding and (when the pack has the model) gender and age."""

    detection: Detection
    aligned: np.ndarray
    embedding: np.ndarray | None = None
    gender: str | None = None
    age: int | None = None


@dataclass
class DroppedImage:
    """An input image that gave no usable face, and why (shown to the user, never silently lost)."""

    index: int
    reason: str


@dataclass
class AlignResult:
    """Output of :meth:`FaceModels.align_batch`: one aligned face per input image that had one."""

    faces: np.ndarray  # [M, 112, 112, 3] uint8
    source_index: np.ndarray  # [M] index of the input image each face came from
    detections: list[Detection | None]  # None for inputs taken as already aligned
    dropped: list[DroppedImage] = field(default_factory=list)
    n_input: int = 0

    def report(self) -> str:
        """Human-readable summary of what was kept and dropped."""
        lines = [f"aligned {len(self.faces)} of {self.n_input} image(s); dropped {len(self.dropped)}"]
        lines += [f"  image {d.index}: {d.reason}" for d in self.dropped]
        return "\n".join(lines)

    def to_faceset(
        self,
        labels: Sequence[int] | np.ndarray | None = None,
        *,
        stage: str = "align",
        as_sources: bool = True,
    ) -> FaceSet:
        """Wrap the faces as a faceset. ``labels`` gives one identity per *input* image (default: the input
        index, so each image is its own identity); the first face of each identity becomes its source."""
        idx = self.source_index.astype(np.int64)
        if labels is None:
            labs = idx.copy()
        else:
            all_labels = np.asarray(labels, np.int64)
            if all_labels.shape != (self.n_input,):
                raise InputError(
                    f"{len(all_labels)} labels for {self.n_input} input images", where="AlignResult"
                )
            labs = all_labels[idx] if len(idx) else np.zeros((0,), np.int64)
        prov = []
        for k, (i, lab) in enumerate(zip(idx.tolist(), labs.tolist(), strict=True)):
            det = self.detections[k]
            extra: dict[str, Any] = {"input_index": int(i)}
            if det is not None:
                extra.update(
                    det_score=round(float(det.score), 5), bbox=[round(float(v), 2) for v in det.bbox]
                )
            prov.append(Provenance(identity=int(lab), history=[stage], extra=extra))
        sources: dict[int, np.ndarray] = {}
        if as_sources:
            for k, lab in enumerate(labs.tolist()):
                sources.setdefault(int(lab), self.faces[k].copy())
        faces = self.faces if len(self.faces) else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        return FaceSet(faces, labs, prov, sources)


# ----------------------------------------------------------------------------- providers
def available_providers() -> list[str]:
    """onnxruntime's available execution providers (empty when onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def provider_choices() -> list[str]:
    """Choices for a provider widget: ``auto`` first, then the short names onnxruntime offers here."""
    avail = available_providers()
    names = [p.removesuffix("ExecutionProvider") for p in avail if p != "AzureExecutionProvider"]
    return ["auto", *[n for n in PROVIDER_CHOICES[1:] if n in names]] or ["auto", "CPU"]


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Turn ``auto`` / ``CPU`` / ``CUDA`` / full provider names into the list passed to onnxruntime.

    ``auto`` takes CUDA when onnxruntime offers it, else CPU. A provider that is not available is not
    an error: it falls back to CPU with a warning that lists what is available (the batch goes on).
    """
    avail = available_providers()
    if isinstance(providers, str):
        requested = [providers]
    else:
        requested = list(providers)
    if not requested or requested == ["auto"]:
        if "CUDAExecutionProvider" in avail:
            log.info("[FDTA] faces: ONNX provider auto -> CUDA (onnxruntime offers CUDAExecutionProvider)")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.info(
            "[FDTA] faces: ONNX provider auto -> CPU (no CUDA provider in onnxruntime; available: %s)", avail
        )
        return ["CPUExecutionProvider"]
    out: list[str] = []
    for name in requested:
        full = name if name.endswith("ExecutionProvider") else f"{name}ExecutionProvider"
        if full in avail:
            out.append(full)
        else:
            log.warning(
                "[FDTA] faces: ONNX provider %s is not available in this onnxruntime (available: %s); "
                "using CPU instead. For CUDA install onnxruntime-gpu instead of onnxruntime (never both).",
                name,
                ", ".join(avail) or "none",
            )
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelFormatError(
            "onnxruntime is not installed, so the face models cannot run",
            where="faces",
            fix="pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA) into ComfyUI's Python.",
        ) from exc
    return ort


def _session(path: Path, providers: list[str], threads: int = 0):
    ort = _import_ort()
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


def _mxnet_normalisation(path: Path) -> bool:
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


def _dims(shape: Sequence[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _to_blob(images: np.ndarray, mean: float, std: float) -> np.ndarray:
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


# ----------------------------------------------------------------------------- model wrappers
class SCRFDDetector:
    """SCRFD face detector with 5 keypoints (insightface's ``det_*.onnx``)."""

    role = "detector"

    def __init__(self, path: Path, session, det_size: int = 640, threshold: float = 0.5, nms: float = 0.4):
        self.path = path
        self.session = session
        self.threshold = float(threshold)
        self.nms_threshold = float(nms)
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = _dims(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, None):
            raise ModelFormatError(
                f"{path.name}: detector input must be 1x3xHxW, got {inp.shape}", where="faces.detector"
            )
        self.input_size = (shape[3], shape[2]) if shape[2] and shape[3] else (int(det_size), int(det_size))
        outs = session.get_outputs()
        self.output_names = [o.name for o in outs]
        n = len(outs)
        if n in (6, 9):
            self.fmc, self.strides, self.num_anchors = 3, [8, 16, 32], 2
        elif n in (10, 15):
            self.fmc, self.strides, self.num_anchors = 5, [8, 16, 32, 64, 128], 1
        else:
            raise ModelFormatError(
                f"{path.name}: an SCRFD detector has 6, 9, 10 or 15 outputs, this model has {n}",
                where="faces.detector",
                fix="use an insightface SCRFD detector such as det_10g.onnx.",
            )
        if n in (6, 10):
            raise ModelFormatError(
                f"{path.name}: this SCRFD model gives no 5-point landmarks, which alignment needs",
                where="faces.detector",
                fix="use a keypoint model (det_10g.onnx, scrfd_*_bnkps.onnx).",
            )
        if self.input_size[0] % 32 or self.input_size[1] % 32:
            raise InputError(
                f"detector size must be a multiple of 32, got {self.input_size}", where="faces.det_size"
            )
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centers:
            ys, xs = np.mgrid[:h, :w]
            c = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            if self.num_anchors > 1:
                c = np.repeat(c, self.num_anchors, axis=0)
            self._centers[key] = c
        return self._centers[key]

    def _forward(self, canvas: np.ndarray, threshold: float):
        blob = _to_blob(canvas[None], 127.5, 128.0)
        outs = self.session.run(self.output_names, {self.input_name: blob})
        outs = [o[0] if o.ndim == 3 else o for o in outs]  # batched exports carry a leading 1
        ih, iw = canvas.shape[:2]
        scores_l, boxes_l, kps_l = [], [], []
        for i, stride in enumerate(self.strides):
            h, w = ih // stride, iw // stride
            centers = self._anchor_centers(h, w, stride)
            scores = outs[i].reshape(-1)
            box = outs[i + self.fmc].reshape(-1, 4) * stride
            kps = outs[i + 2 * self.fmc].reshape(-1, 10) * stride
            if scores.shape[0] != centers.shape[0] or box.shape[0] != centers.shape[0]:
                raise ModelFormatError(
                    f"{self.path.name}: stride {stride} gives {scores.shape[0]} scores for {centers.shape[0]} anchors",
                    where="faces.detector",
                    fix="this is not an SCRFD model with the insightface output layout.",
                )
            pos = np.nonzero(scores >= threshold)[0]
            c = centers[pos]
            b = box[pos]
            boxes_l.append(
                np.stack([c[:, 0] - b[:, 0], c[:, 1] - b[:, 1], c[:, 0] + b[:, 2], c[:, 1] + b[:, 3]], -1)
            )
            k = kps[pos].reshape(-1, 5, 2) + c[:, None, :]
            kps_l.append(k)
            scores_l.append(scores[pos])
        return np.concatenate(scores_l), np.concatenate(boxes_l), np.concatenate(kps_l)

    def _nms(self, boxes: np.ndarray, scores: np.ndarray) -> list[int]:
        x1, y1, x2, y2 = boxes.T
        areas = (x2 - x1 + 1) * (y2 - y1 + 1)
        order = scores.argsort()[::-1]
        keep: list[int] = []
        while order.size:
            i = int(order[0])
            keep.append(i)
            rest = order[1:]
            w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
            h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
            inter = w * h
            ovr = inter / (areas[i] + areas[rest] - inter)
            order = rest[ovr <= self.nms_threshold]
        return keep

    def detect(self, image_rgb: np.ndarray, threshold: float | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, best score first; coordinates in the image's pixels."""
        import cv2

        img = ensure_rgb_uint8(image_rgb, where="detect.image")
        thr = self.threshold if threshold is None else float(threshold)
        iw, ih = self.input_size
        im_ratio = img.shape[0] / img.shape[1]
        if im_ratio > ih / iw:
            nh, nw = ih, max(1, int(ih / im_ratio))
        else:
            nw, nh = iw, max(1, int(iw * im_ratio))
        scale = nh / img.shape[0]
        canvas = np.zeros((ih, iw, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(img, (nw, nh)) if (nw, nh) != (img.shape[1], img.shape[0]) else img
        scores, boxes, kps = self._forward(canvas, thr)
        if scores.size == 0:
            return []
        boxes = boxes / scale
        kps = kps / scale
        keep = self._nms(boxes, scores)
        return [
            Detection(boxes[i].astype(np.float32), float(scores[i]), kps[i].astype(np.float32)) for i in keep
        ]


class ArcFaceRecognizer:
    """ArcFace embedding model (``w600k_r50.onnx`` and friends): N x 3 x 112 x 112 RGB -> N x D."""

    role = "recognizer"

    def __init__(self, path: Path, session):
        self.path = path
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = _dims(inp.shape)
        outs = session.get_outputs()
        if len(shape) != 4 or shape[1] != 3 or shape[2] != 112 or shape[3] != 112:
            raise ModelFormatError(
                f"{path.name}: an ArcFace model takes N x 3 x 112 x 112, this one takes {inp.shape}",
                where="faces.recognizer",
                fix="use an insightface recognition model such as w600k_r50.onnx.",
            )
        oshape = _dims(outs[0].shape)
        if len(outs) != 1 or len(oshape) != 2 or not oshape[1] or oshape[1] < 64:
            raise ModelFormatError(
                f"{path.name}: an ArcFace model returns one N x D embedding, this one returns "
                f"{[o.shape for o in outs]}",
                where="faces.recognizer",
            )
        self.dim = int(oshape[1])
        self.output_name = outs[0].name
        self.fixed_batch = shape[0]  # None = dynamic
        if _mxnet_normalisation(path):
            self.mean, self.std = 0.0, 1.0
            log.info(
                "[FDTA] faces: %s normalises inside the graph (MXNet export); feeding raw 0-255", path.name
            )
        else:
            self.mean, self.std = 127.5, 127.5

    def embed(self, faces: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Unnormalised embeddings of aligned uint8 RGB faces ``[N, 112, 112, 3]``, in batches."""
        arr = np.asarray(faces)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (112, 112, 3):
            raise InputError(
                f"embeddings need aligned faces [N, 112, 112, 3], got {list(arr.shape)}",
                where="embed",
                fix="align the faces first (FDTAAlignFaces / FaceModels.align_batch).",
            )
        if arr.dtype != np.uint8:
            arr = np.stack([ensure_rgb_uint8(a) for a in arr]) if len(arr) else arr.astype(np.uint8)
        if len(arr) == 0:
            return np.zeros((0, self.dim), np.float32)
        bs = self.fixed_batch or max(1, int(batch_size))
        starts = list(range(0, len(arr), bs))

        def prepare(s: int) -> tuple[np.ndarray, int]:
            chunk = arr[s : s + bs]
            pad = 0
            if self.fixed_batch and len(chunk) < self.fixed_batch:
                pad = self.fixed_batch - len(chunk)
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            return _to_blob(chunk, self.mean, self.std), pad

        def run(blob: np.ndarray, pad: int) -> np.ndarray:
            emb = self.session.run([self.output_name], {self.input_name: blob})[0]
            return emb[: len(emb) - pad] if pad else emb

        out = [run(*prepare(s)) for s in starts]
        return np.concatenate(out).astype(np.float32, copy=False)


class GenderAgeModel:
    """insightface's gender/age model (``genderage.onnx``): N x 3 x 96 x 96 -> N x 3
    (female / male logits, age / 100)."""

    role = "genderage"

    def __init__(self, path: Path, session):
        self.path = path
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = _dims(inp.shape)
        outs = session.get_outputs()
        if len(shape) != 4 or shape[1] != 3 or not shape[2] or shape[2] != shape[3]:
            raise ModelFormatError(
                f"{path.name}: gender/age input must be N x 3 x S x S, got {inp.shape}",
                where="faces.genderage",
            )
        oshape = _dims(outs[0].shape)
        if len(outs) != 1 or len(oshape) != 2 or oshape[1] != 3:
            raise ModelFormatError(
                f"{path.name}: a gender/age model returns N x 3, this one returns {[o.shape for o in outs]}",
                where="faces.genderage",
            )
        self.size = int(shape[2])
        self.output_name = outs[0].name
        self.fixed_batch = shape[0]
        if _mxnet_normalisation(path):
            self.mean, self.std = 0.0, 1.0
        else:
            self.mean, self.std = 127.5, 128.0

    def crop(self, image_rgb: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
        """The un-rotated crop the model expects: the box centre, scaled so 1.5 x the longer box side fits."""
        import cv2

        x1, y1, x2, y2 = (float(v) for v in bbox)
        scale = self.size / (max(x2 - x1, y2 - y1) * 1.5)
        m = crop_transform(((x1 + x2) / 2, (y1 + y2) / 2), self.size, scale)
        return cv2.warpAffine(image_rgb, m, (self.size, self.size), borderValue=(0, 0, 0))

    def predict(self, crops: np.ndarray, batch_size: int = 32) -> tuple[list[str], list[int]]:
        """Gender (``"female"``/``"male"``) and age in years for model-sized crops ``[N, S, S, 3]``."""
        if len(crops) == 0:
            return [], []
        bs = self.fixed_batch or max(1, int(batch_size))
        preds = []
        for s in range(0, len(crops), bs):
            chunk = crops[s : s + bs]
            pad = (self.fixed_batch - len(chunk)) if self.fixed_batch else 0
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            p = self.session.run([self.output_name], {self.input_name: _to_blob(chunk, self.mean, self.std)})[
                0
            ]
            preds.append(p[: len(p) - pad] if pad else p)
        pred = np.concatenate(preds)
        genders = ["male" if int(np.argmax(p[:2])) == 1 else "female" for p in pred]
        ages = [int(np.round(float(p[2]) * 100)) for p in pred]
        return genders, ages


# ----------------------------------------------------------------------------- pack
def _role_by_name(name: str) -> str | None:
    low = name.lower()
    if low.startswith(_IGNORED_PREFIXES):
        return "ignored"
    if low.startswith("det_") or low.startswith("scrfd"):
        return "detector"
    if low.startswith("genderage"):
        return "genderage"
    if low.startswith(("w600k", "glintr", "arcface")):
        return "recognizer"
    return None


def _role_by_signature(session) -> str | None:
    ins, outs = session.get_inputs(), session.get_outputs()
    shape = _dims(ins[0].shape)
    if len(outs) >= 5:
        return "detector"
    if len(shape) == 4 and shape[2] == 112 and shape[3] == 112 and len(outs) == 1:
        return "recognizer"
    if len(outs) == 1 and _dims(outs[0].shape)[-1:] == [3]:
        return "genderage"
    return None


def pack_dirs(folders: Sequence[str | os.PathLike], pack: str) -> list[Path]:
    """Candidate folders of ``pack``: ``<root>/models/<pack>`` (insightface's layout) then ``<root>/<pack>``."""
    out = []
    for root in folders:
        out += [Path(root) / "models" / pack, Path(root) / pack]
    return out


def list_packs(folders: Sequence[str | os.PathLike]) -> list[str]:
    """Names of the packs (sub-folders holding ``.onnx`` files) under every root's ``models/`` folder."""
    names: set[str] = set()
    for root in folders:
        base = Path(root) / "models"
        if not base.is_dir():
            continue
        for d in base.iterdir():
            if d.is_dir() and any(p.suffix == ".onnx" for p in d.iterdir()):
                names.add(d.name)
    return sorted(names)


class FaceModels:
    """The models of one pack, each optional; a feature that needs a missing one says so.

    ``embed`` returns *unnormalised* embeddings (normalise for cosine); ``align_batch`` turns images of
    any size into aligned faces and reports the ones without a usable face.
    """

    def __init__(
        self,
        detector: SCRFDDetector | None = None,
        recognizer: ArcFaceRecognizer | None = None,
        genderage: GenderAgeModel | None = None,
        *,
        pack: str = "",
        folder: Path | None = None,
        providers: Sequence[str] = (),
        searched: Sequence[str] = (),
    ) -> None:
        self.detector = detector
        self.recognizer = recognizer
        self.genderage = genderage
        self.pack = pack
        self.folder = folder
        self.providers = list(providers)
        self.searched = list(searched)

    def __repr__(self) -> str:
        return f"FaceModels({self.describe()})"

    def describe(self) -> str:
        parts = [f"pack={self.pack or '?'}"]
        for role in ("detector", "recognizer", "genderage"):
            m = getattr(self, role)
            parts.append(f"{role}={m.path.name if m else '-'}")
        parts.append(f"providers={','.join(p.removesuffix('ExecutionProvider') for p in self.providers)}")
        return " ".join(parts)

    def _need(self, role: str):
        model = getattr(self, role)
        if model is None:
            raise ModelNotFoundError(
                f"the {role} model of face pack '{self.pack}'",
                searched=self.searched or ([str(self.folder)] if self.folder else []),
                expected=[DEFAULT_FILES[role]],
                where="faces",
            )
        return model

    # -- single steps
    def detect(self, image_rgb: np.ndarray, threshold: float | None = None) -> list[Detection]:
        return self._need("detector").detect(image_rgb, threshold)

    def embed(self, aligned: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self._need("recognizer").embed(aligned, batch_size)

    @property
    def embedding_dim(self) -> int:
        return self._need("recognizer").dim

    def gender_age(
        self, image_rgb: np.ndarray, detections: Sequence[Detection]
    ) -> tuple[list[str], list[int]]:
        """Gender and age of each detected face in one image."""
        model = self._need("genderage")
        img = ensure_rgb_uint8(image_rgb)
        crops = np.stack([model.crop(img, d.bbox) for d in detections]) if detections else np.zeros((0,))
        return model.predict(crops)

    def gender_age_aligned(self, faces: np.ndarray, batch_size: int = 32) -> tuple[list[str], list[int]]:
        """Gender and age of aligned 112x112 faces (the crop uses :data:`ALIGNED_FACE_BOX`)."""
        model = self._need("genderage")
        if len(faces) == 0:
            return [], []
        crops = np.stack([model.crop(np.ascontiguousarray(f), ALIGNED_FACE_BOX) for f in faces])
        return model.predict(crops, batch_size)

    def analyze(self, image_rgb: np.ndarray, threshold: float | None = None) -> list[FaceAnalysis]:
        """Detect every face, align it, embed the crops in one batch and add gender/age when available."""
        img = ensure_rgb_uint8(image_rgb, where="analyze.image")
        dets = self.detect(img, threshold)
        if not dets:
            return []
        crops = np.stack([align_face(img, d.kps) for d in dets])
        out = [FaceAnalysis(d, c) for d, c in zip(dets, crops, strict=True)]
        if self.recognizer is not None:
            for fa, e in zip(out, self.embed(crops), strict=True):
                fa.embedding = e
        if self.genderage is not None:
            genders, ages = self.gender_age(img, dets)
            for fa, g, a in zip(out, genders, ages, strict=True):
                fa.gender, fa.age = g, a
        return out

    # -- batches
    def align_batch(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        *,
        threshold: float | None = None,
        min_face_size: float = 0.0,
        assume_aligned: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> AlignResult:
        """One aligned face per image (the largest, most central one).

        Images that are already 112x112 are taken as aligned when ``assume_aligned`` (no detection).
        An image without a face, with a face smaller than ``min_face_size`` pixels, or one that cannot
        be read is dropped and reported; the batch goes on.
        """
        n = len(images)
        faces: list[np.ndarray] = []
        index: list[int] = []
        dets: list[Detection | None] = []
        dropped: list[DroppedImage] = []
        for i in range(n):
            try:
                img = ensure_rgb_uint8(images[i], where=f"image {i}")
                if assume_aligned and img.shape[:2] == (FACE_SIZE, FACE_SIZE):
                    faces.append(img)
                    index.append(i)
                    dets.append(None)
                else:
                    found = self.detect(img, threshold)
                    if not found:
                        dropped.append(
                            DroppedImage(i, f"no face found ({img.shape[1]}x{img.shape[0]} image)")
                        )
                    else:
                        best = _pick_main_face(found, img.shape)
                        if best.size < min_face_size:
                            dropped.append(
                                DroppedImage(
                                    i, f"face too small ({best.size:.0f} px < {min_face_size:.0f} px)"
                                )
                            )
                        else:
                            faces.append(align_face(img, best.kps))
                            index.append(i)
                            dets.append(best)
            except (FDTAError, ValueError) as exc:
                dropped.append(DroppedImage(i, str(exc)))
            if dropped and dropped[-1].index == i:
                log.warning("[FDTA] faces: image %d dropped: %s", i, dropped[-1].reason)
            if progress is not None:
                progress(i + 1, n)
        arr = np.stack(faces) if faces else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        return AlignResult(arr, np.asarray(index, np.int64), dets, dropped, n)


def _pick_main_face(dets: Sequence[Detection], shape: tuple[int, ...]) -> Detection:
    """insightface's choice for ``max_num=1``: large and central (area - 2 x squared centre offset)."""
    h, w = shape[:2]
    best, best_v = dets[0], -np.inf
    for d in dets:
        x1, y1, x2, y2 = (float(v) for v in d.bbox)
        area = (x2 - x1) * (y2 - y1)
        off = ((x1 + x2) / 2 - w // 2) ** 2 + ((y1 + y2) / 2 - h // 2) ** 2
        v = area - 2.0 * off
        if v > best_v:
            best, best_v = d, v
    return best


def load_face_pack(
    folders: Sequence[str | os.PathLike],
    pack: str = "buffalo_l",
    providers: str | Sequence[str] = "auto",
    det_size: int = 640,
    *,
    require: Sequence[str] = ("detector", "recognizer"),
    det_threshold: float = 0.5,
    threads: int = 0,
) -> FaceModels:
    """Load the models of ``pack`` from the first folder that has it.

    Roles come from the canonical file names first (``det_*``, ``genderage*``) and otherwise from the
    model's signature, so other packs (antelopev2, buffalo_s) work. ``require`` lists roles that must
    be present; a missing one raises :class:`ModelNotFoundError` naming the folders and expected files.
    ``threads`` > 0 caps onnxruntime's intra-op threads (useful when several workers share a CPU).
    """
    if not pack or "/" in pack or "\\" in pack or pack in (".", ".."):
        raise InputError(
            f"invalid pack name {pack!r}",
            where="faces.pack",
            fix="pick a pack folder name such as buffalo_l.",
        )
    candidates = pack_dirs(folders, pack)
    folder = next((d for d in candidates if d.is_dir() and any(d.glob("*.onnx"))), None)
    searched = [str(d) for d in candidates]
    if folder is None:
        raise ModelNotFoundError(
            f"face model pack '{pack}'",
            searched=searched,
            expected=[DEFAULT_FILES[r] for r in ("detector", "recognizer", "genderage")],
            where="faces.pack",
            fix=f"put the pack's .onnx files in models/insightface/models/{pack}/ "
            "(insightface model weights are for non-commercial research only).",
        )
    prov = resolve_providers(providers)
    found: dict[str, Any] = {}
    for path in sorted(folder.glob("*.onnx")):
        role = _role_by_name(path.name)
        if role == "ignored":
            continue
        if role is not None and role in found:
            continue
        session = None
        if role is None:
            if "recognizer" in found and "genderage" in found:
                continue
            session = _session(path, prov, threads)
            role = _role_by_signature(session)
            if role is None or role in found:
                log.debug("[FDTA] faces: %s is not a detector, recogniser or gender/age model; skipped", path)
                continue
        preferred = DEFAULT_FILES[role]
        if role in found and path.name != preferred:
            continue
        session = session or _session(path, prov, threads)
        if role == "detector":
            found[role] = SCRFDDetector(path, session, det_size=det_size, threshold=det_threshold)
        elif role == "recognizer":
            found[role] = ArcFaceRecognizer(path, session)
        else:
            found[role] = GenderAgeModel(path, session)
    missing = [r for r in require if r not in found]
    if missing:
        raise ModelNotFoundError(
            f"face model pack '{pack}' in {folder} is incomplete: no {', '.join(missing)} model",
            searched=[str(folder)],
            expected=[DEFAULT_FILES[r] for r in missing],
            where="faces.pack",
        )
    # onnxruntime silently drops a provider whose libraries fail to load (e.g. CUDA without cuDNN):
    # report what the sessions really use.
    used = list(next(iter(found.values())).session.get_providers()) if found else prov
    if used[:1] != prov[:1]:
        log.warning(
            "[FDTA] faces: asked onnxruntime for %s but the session runs on %s (check the CUDA/cuDNN "
            "libraries that onnxruntime-gpu needs)",
            prov[0],
            used[0] if used else "nothing",
        )
    models = FaceModels(
        found.get("detector"),
        found.get("recognizer"),
        found.get("genderage"),
        pack=pack,
        folder=folder,
        providers=used,
        searched=searched,
    )
    log.info("[FDTA] faces: loaded %s", models.describe())
    return models
