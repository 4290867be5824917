"""Adapter from an ``FDTA_FACE_MODELS`` object to the :class:`~fdta_core.acg.selection.FaceAnalyzer`
protocol that candidate selection uses."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .selection import FaceAnalyzer


def as_analyzer(face_models: Any) -> FaceAnalyzer:
    """Return a :class:`FaceAnalyzer` for ``face_models``.

    Objects that already implement the protocol (``analyze`` + ``embed_aligned``) are used as they are.
    """
    if isinstance(face_models, FaceAnalyzer):
        return face_models
    raise InputError(
        f"face_models of type {type(face_models).__name__} cannot analyse candidates",
        where="face_models",
        fix="connect the FACE_MODELS output of FDTAFaceModelLoader.",
    )
