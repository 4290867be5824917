"""Adapter from an ``FDTA_FACE_MODELS`` object (``fdta_core.faces.pack.FaceModels``) to the
:class:`~fdta_core.acg.selection.FaceAnalyzer` protocol that candidate selection uses.

The adapter relies only on the public methods of ``FaceModels`` (``analyze(image, threshold)`` returning
detections with aligned crops, embeddings, gender and age; ``embed(aligned)``), so selection stays
testable with synthetic analyses and any backend with the same two methods plugs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..faces.detector import main_face_index
from .selection import FaceAnalysis, FaceAnalyzer


def main_face(faces: Sequence[Any], shape: tuple[int, ...]) -> Any:
    """The face a portrait is about, by the faces stage's one rule (:func:`~fdta_core.faces.main_face_index`)
    applied to each face's ``detection.bbox``."""
    return faces[main_face_index([f.detection.bbox for f in faces], shape)]


class FaceModelsAnalyzer:
    """:class:`FaceAnalyzer` over ``FaceModels``.

    ``det_threshold`` is the detector's own threshold: kept below the selection's ``min_det_score`` so
    weak faces are seen and reported as weak (contact sheet) instead of as missing.
    """

    def __init__(self, models: Any, det_threshold: float | None = 0.2) -> None:
        self.models = models
        self.det_threshold = det_threshold

    def analyze(self, images: np.ndarray) -> list[FaceAnalysis]:
        out: list[FaceAnalysis] = []
        for img in images:
            faces = self.models.analyze(np.ascontiguousarray(img), self.det_threshold)
            if not faces:
                out.append(FaceAnalysis(False))
                continue
            f = main_face(faces, img.shape)
            out.append(
                FaceAnalysis(
                    True,
                    float(f.detection.score),
                    aligned=np.ascontiguousarray(f.aligned, dtype=np.uint8),
                    embedding=None if f.embedding is None else np.asarray(f.embedding, np.float64),
                    gender=f.gender,
                    age=None if f.age is None else float(f.age),
                    bbox=tuple(float(v) for v in f.detection.bbox),  # type: ignore[arg-type]
                    kps=None
                    if getattr(f.detection, "kps", None) is None
                    else np.asarray(f.detection.kps, np.float64).reshape(-1, 2),
                )
            )
        return out

    def embed_aligned(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, 1))
        return np.asarray(self.models.embed(np.ascontiguousarray(faces)), np.float64)


def as_analyzer(face_models: Any, *, det_threshold: float | None = 0.2) -> FaceAnalyzer:
    """Return a :class:`FaceAnalyzer` for ``face_models``.

    ``FaceModels`` (anything with ``analyze(image, threshold)`` and ``embed(faces)``) is wrapped; an
    object that already implements the protocol (``analyze`` over a batch + ``embed_aligned``) is used
    as it is.
    """
    if hasattr(face_models, "embed_aligned") and hasattr(face_models, "analyze"):
        return face_models
    if hasattr(face_models, "analyze") and hasattr(face_models, "embed"):
        if getattr(face_models, "detector", True) is None:
            raise InputError(
                "the face pack has no detector, so candidates cannot be checked",
                where="face_models",
                fix="load a pack with a detection model (det_10g.onnx), or disconnect face_models.",
            )
        return FaceModelsAnalyzer(face_models, det_threshold)
    raise InputError(
        f"face_models of type {type(face_models).__name__} cannot analyse candidates",
        where="face_models",
        fix="connect the face_models output of FDTAFaceModelLoader.",
    )
