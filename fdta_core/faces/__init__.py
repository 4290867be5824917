"""Faces: detection (SCRFD), alignment to the ArcFace template, ArcFace embeddings, gender/age, the CSIM
filter, identity uniqueness / privacy checks and data-set quality metrics.

Modules: ``align`` (template, similarity fit, warp), ``models`` (insightface packs through onnxruntime:
``load_face_pack`` -> ``FaceModels``), ``csim`` (``csim_filter``, contact sheet, histogram),
``identity`` (uniqueness and real-person checks), ``metrics`` (DCFace uniqueness / consistency, CSIM
spread, attribute balance), ``report`` (``fdta report``). Nothing here imports onnxruntime or cv2 at
import time; submodules are imported on demand.
"""

from __future__ import annotations

from .align import ARCFACE_TEMPLATE_112, align_face, estimate_similarity, warp_points

__all__ = ["ARCFACE_TEMPLATE_112", "align_face", "estimate_similarity", "warp_points"]
