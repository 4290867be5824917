"""An insightface pack: finding its folder, loading its ONNX models by role, and ``FaceModels``.

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

from ..errors import FDTAError, InputError, ModelNotFoundError
from ..faceset import FACE_SIZE, FaceSet, Provenance
from .align import align_face, ensure_rgb_uint8
from .detector import Detection, SCRFDDetector, pick_main_face
from .genderage import ALIGNED_FACE_BOX, GenderAgeModel
from .providers import onnx_session, resolve_providers, static_dims
from .recognizer import ArcFaceRecognizer

log = logging.getLogger(__name__)

#: Canonical file names of buffalo_l (the default pack); other packs are recognised by signature.
DEFAULT_FILES: dict[str, str] = {
    "detector": "det_10g.onnx",
    "recognizer": "w600k_r50.onnx",
    "genderage": "genderage.onnx",
}
#: Files of known packs that are not used here (dense landmark models).
_IGNORED_PREFIXES = ("1k3d68", "2d106det")


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
    shape = static_dims(ins[0].shape)
    if len(outs) >= 5:
        return "detector"
    if len(shape) == 4 and shape[2] == 112 and shape[3] == 112 and len(outs) == 1:
        return "recognizer"
    if len(outs) == 1 and static_dims(outs[0].shape)[-1:] == [3]:
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

    def embed(self, aligned: np.ndarray, batch_size: int = 32, progress: Any = None) -> np.ndarray:
        return self._need("recognizer").embed(aligned, batch_size, progress)

    def embed_many(
        self,
        parts: Sequence[np.ndarray],
        batch_size: int = 32,
        progress: Any = None,
        on_batch: Callable[[int, int, np.ndarray], None] | None = None,
    ) -> list[np.ndarray]:
        """Embeddings of several aligned-face arrays in one batched pipeline, one result per array
        (``on_batch``: see :meth:`~fdta_core.faces.providers.BatchedModel.run_batches`)."""
        return self._need("recognizer").embed_many(parts, batch_size, progress, on_batch)

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
                        best = pick_main_face(found, img.shape)
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


def load_face_pack(
    folders: Sequence[str | os.PathLike],
    pack: str = "buffalo_l",
    providers: str | Sequence[str] = "auto",
    det_size: int = 640,
    *,
    require: Sequence[str] = ("detector", "recognizer"),
    det_threshold: float = 0.5,
    threads: int = 0,
    recognizer_fp16: bool = False,
) -> FaceModels:
    """Load the models of ``pack`` from the first folder that has it.

    Roles come from the canonical file names first (``det_*``, ``genderage*``) and otherwise from the
    model's signature, so other packs (antelopev2, buffalo_s) work. ``require`` lists roles that must
    be present; a missing one raises :class:`ModelNotFoundError` naming the folders and expected files.
    ``threads`` > 0 caps onnxruntime's intra-op threads (useful when several workers share a CPU).
    ``recognizer_fp16`` runs the recogniser from an fp16 copy (:func:`fdta_core.faces.fp16.cached_float16`;
    meant for CUDA, where it halves memory traffic; float32 in and out as before).
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
            session = onnx_session(path, prov, threads)
            role = _role_by_signature(session)
            if role is None or role in found:
                log.debug("[FDTA] faces: %s is not a detector, recogniser or gender/age model; skipped", path)
                continue
        preferred = DEFAULT_FILES[role]
        if role in found and path.name != preferred:
            continue
        if role == "recognizer" and recognizer_fp16:
            from .fp16 import cached_float16

            session = onnx_session(cached_float16(path), prov, threads)
        session = session or onnx_session(path, prov, threads)
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
