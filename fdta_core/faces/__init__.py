"""Faces: detection (SCRFD), alignment to the ArcFace template, ArcFace embeddings, gender/age, the CSIM
filter, identity uniqueness / privacy checks and data-set quality metrics.

Submodules are imported on demand; nothing here imports onnxruntime or cv2 at import time.
"""

from __future__ import annotations

from .align import ARCFACE_TEMPLATE_112, align_face, estimate_similarity, warp_points

__all__ = ["ARCFACE_TEMPLATE_112", "align_face", "estimate_similarity", "warp_points"]
