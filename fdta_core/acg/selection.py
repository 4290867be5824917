"""Candidate selection: which generated image becomes an identity's source face, and why the others not.

The face models (detector, ArcFace, gender/age) are reached through the small :class:`FaceAnalyzer`
protocol and their per-image results through :class:`FaceAnalysis`, so the rules here are unit-tested
with synthetic analyses and any face-model backend can be plugged in (``fdta_core.acg.faces_adapter``
wraps ``fdta_core.faces``).

Rules (DESIGN 5.6): a candidate is acceptable when a face is detected (score >= ``min_det_score``) and
aligned; its gender equals the planned gender; its age lies within ``age_tolerance`` years of the planned
age; it breaks none of the identity rules of ``fdta_core.faces.identity`` (not a copy of a real person,
not a duplicate of an identity accepted in this run; 0.3 is the usual ArcFace same-identity threshold,
as in DCFace's uniqueness metric). Among acceptable
candidates the one with the best detection score wins (then the smaller age error, then the earlier
candidate). Every candidate keeps the list of reasons it was rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError
from ..faces.identity import IdentityIndex, check_threshold, identity_violations


@dataclass
class FaceAnalysis:
    """What the face models saw in one generated image.

    ``aligned`` is the 112x112 RGB uint8 face aligned to the ArcFace template; ``embedding`` its ArcFace
    vector (any norm); ``gender`` is ``"male"``/``"female"`` and ``age`` years, or None when no
    gender/age model is available (the check is then skipped and recorded as unchecked).
    """

    detected: bool
    det_score: float = 0.0
    aligned: np.ndarray | None = None
    embedding: np.ndarray | None = None
    gender: str | None = None
    age: float | None = None
    bbox: tuple[float, float, float, float] | None = None


@runtime_checkable
class FaceAnalyzer(Protocol):
    """A face-model backend for selection."""

    def analyze(self, images: np.ndarray) -> list[FaceAnalysis]:
        """One analysis per image of a uint8 RGB batch [N,H,W,3] (the most prominent face of each)."""
        ...

    def embed_aligned(self, faces: np.ndarray) -> np.ndarray:
        """ArcFace embeddings [N,D] of already aligned 112x112 RGB uint8 faces."""
        ...


@dataclass(frozen=True)
class SelectionCriteria:
    """Tolerances of candidate selection. ``age_tolerance`` None disables the age check."""

    min_det_score: float = 0.5
    check_gender: bool = True
    age_tolerance: float | None = 10.0
    uniqueness_threshold: float = 0.3
    real_person_threshold: float = 0.3

    def __post_init__(self) -> None:
        for name in ("uniqueness_threshold", "real_person_threshold"):
            check_threshold(getattr(self, name), name)
        if self.age_tolerance is not None and self.age_tolerance < 0:
            raise InputError(f"age_tolerance must be >= 0, got {self.age_tolerance}", where="age_tolerance")


@dataclass(frozen=True)
class Rejection:
    """Why a candidate was not chosen: a stable ``code`` (for tests and the contact sheet) and a
    human-readable ``detail``."""

    code: str
    detail: str

    #: Short labels for contact-sheet captions.
    SHORT = {
        "no_face": "no face",
        "low_score": "weak face",
        "not_aligned": "no align",
        "no_embedding": "no embed",
        "gender": "gender",
        "age": "age",
        "real_person": "real person",
        "duplicate": "duplicate",
        "not_chosen": "runner-up",
    }

    @property
    def short(self) -> str:
        return self.SHORT.get(self.code, self.code)


def check_candidate(
    analysis: FaceAnalysis,
    *,
    gender: str | None,
    age: float | None,
    criteria: SelectionCriteria,
    accepted: IdentityIndex,
    real: IdentityIndex,
) -> list[Rejection]:
    """Every rule ``analysis`` breaks (empty: acceptable). Identity checks need an embedding."""
    if not analysis.detected:
        return [Rejection("no_face", "no face detected")]
    out: list[Rejection] = []
    if analysis.det_score < criteria.min_det_score:
        out.append(
            Rejection("low_score", f"detection score {analysis.det_score:.2f} < {criteria.min_det_score:.2f}")
        )
    if analysis.aligned is None:
        out.append(Rejection("not_aligned", "face could not be aligned (no landmarks)"))
    if criteria.check_gender and gender and analysis.gender and analysis.gender != gender:
        out.append(Rejection("gender", f"looks {analysis.gender}, planned {gender}"))
    if criteria.age_tolerance is not None and age is not None and analysis.age is not None:
        if abs(float(analysis.age) - float(age)) > criteria.age_tolerance:
            out.append(
                Rejection(
                    "age", f"looks {analysis.age:.0f}, planned {float(age):.0f} ± {criteria.age_tolerance:g}"
                )
            )
    if analysis.embedding is not None:
        for v in identity_violations(
            analysis.embedding,
            accepted=accepted,
            real=real,
            uniqueness_threshold=criteria.uniqueness_threshold,
            real_person_threshold=criteria.real_person_threshold,
        ):
            out.append(Rejection(v.code, v.detail))
    elif len(real) or len(accepted):
        out.append(Rejection("no_embedding", "no embedding: uniqueness and real-person checks impossible"))
    return out


def rank_key(analysis: FaceAnalysis, age: float | None, order: int) -> tuple[float, float, int]:
    """Sort key among acceptable candidates: best detection, then closest age, then earliest."""
    age_err = abs(float(analysis.age) - float(age)) if (age is not None and analysis.age is not None) else 0.0
    return (-float(analysis.det_score), age_err, order)


def choose(
    analyses: Sequence[FaceAnalysis],
    *,
    gender: str | None,
    age: float | None,
    criteria: SelectionCriteria,
    accepted: IdentityIndex,
    real: IdentityIndex,
    names: Sequence[str] | None = None,
) -> tuple[int | None, list[list[Rejection]]]:
    """Pick one of an identity's candidates (in candidate order).

    Returns the index of the chosen candidate (None if none is acceptable) and, per candidate, the
    reasons it was not chosen (empty for the chosen one; runners-up get a ``not_chosen`` reason).
    ``names`` label the candidates in those messages.
    """
    reasons = [
        check_candidate(a, gender=gender, age=age, criteria=criteria, accepted=accepted, real=real)
        for a in analyses
    ]
    ok = [i for i, r in enumerate(reasons) if not r]
    if not ok:
        return None, reasons
    best = min(ok, key=lambda i: rank_key(analyses[i], age, i))
    best_name = names[best] if names is not None else f"candidate {best}"
    for i in ok:
        if i != best:
            reasons[i] = [
                Rejection(
                    "not_chosen",
                    f"acceptable, but {best_name} ranks higher (det {analyses[best].det_score:.2f} vs {analyses[i].det_score:.2f})",
                )
            ]
    return best, reasons
