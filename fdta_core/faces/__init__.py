"""Faces: detection (SCRFD), alignment to the ArcFace template, ArcFace embeddings, gender/age, the CSIM
filter, identity uniqueness / privacy checks and data-set quality metrics.

Modules, one per model family or concern: ``align`` (template, similarity fit, warp), ``providers``
(onnxruntime providers, sessions, input blobs), ``detector`` (SCRFD and the main-face rule),
``recognizer`` (ArcFace), ``genderage``, ``pack`` (insightface packs: ``load_face_pack`` ->
``FaceModels``), ``csim`` (``csim_filter``, contact sheet, histogram), ``identity`` (uniqueness and
real-person checks), ``metrics`` (DCFace uniqueness / consistency, CSIM spread, attribute balance),
``report`` (``fdta report``). Nothing here imports onnxruntime or cv2 at import time; the models import
them when they run.
"""

from __future__ import annotations

from .align import ARCFACE_TEMPLATE_112, align_face, estimate_similarity, warp_points
from .detector import Detection, SCRFDDetector, main_face_index, pick_main_face
from .genderage import ALIGNED_FACE_BOX, GenderAgeModel
from .pack import (
    DEFAULT_FILES,
    AlignResult,
    DroppedImage,
    FaceAnalysis,
    FaceModels,
    list_packs,
    load_face_pack,
    pack_dirs,
)
from .providers import PROVIDER_CHOICES, available_providers, provider_choices, resolve_providers
from .recognizer import ArcFaceRecognizer

__all__ = [
    "ALIGNED_FACE_BOX",
    "ARCFACE_TEMPLATE_112",
    "DEFAULT_FILES",
    "PROVIDER_CHOICES",
    "AlignResult",
    "ArcFaceRecognizer",
    "Detection",
    "DroppedImage",
    "FaceAnalysis",
    "FaceModels",
    "GenderAgeModel",
    "SCRFDDetector",
    "align_face",
    "available_providers",
    "estimate_similarity",
    "list_packs",
    "load_face_pack",
    "main_face_index",
    "pack_dirs",
    "pick_main_face",
    "provider_choices",
    "resolve_providers",
    "warp_points",
]
