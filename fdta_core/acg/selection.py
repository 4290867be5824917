"""Candidate selection: which generated image becomes an identity's source face, and why the others not.

The face models (detector, ArcFace, gender/age) are reached through the small :class:`FaceAnalyzer`
protocol and their per-image results through :class:`FaceAnalysis`, so the rules here are unit-tested
with synthetic analyses and any face-model backend can be plugged in (``fdta_core.acg.faces_adapter``
wraps ``fdta_core.faces``).

Rules (DESIGN 5.6): a candidate is acceptable when a face is detected (score >= ``min_det_score``) and
aligned; its gender equals the planned gender; its age lies within ``age_tolerance`` years of the planned
age; it breaks none of the identity rules of ``fdta_core.faces.identity`` (not a copy of a real person,
not a duplicate of an identity accepted in this run; 0.3 is the usual ArcFace same-identity threshold,
as in DCFace's uniqueness metric); when the plan asks for a checkable expression (neutral / smiling) the
mouth-corner geometry of the five keypoints agrees, and the head is frontal within the tolerances
(``fdta_core.faces.keypoints``). Among acceptable candidates the one *farthest* from the identities
already accepted in the run wins (largest minimum cosine distance to the run's identity index: the
packing idea of HyperFace / Vec2Face, spreading identities on the hypersphere); with nothing accepted
yet, or with ``prefer="detection"``, the best detection score wins (then the smaller age error, then the
earlier candidate). Every candidate keeps the list of reasons it was rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError, check_choice
from ..faces.identity import IdentityIndex, check_threshold, identity_violations
from ..faces.keypoints import (
    KeypointCriteria,
    KeypointGeometry,
    expression_problem,
    keypoint_geometry,
    pose_problem,
)

#: How the winner among acceptable candidates is picked: ``farthest`` from the accepted identities
#: (ties and an empty index fall back to detection), or the best ``detection`` score.
PREFER: tuple[str, ...] = ("farthest", "detection")


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
    kps: np.ndarray | None = None  # the detector's five keypoints [5, 2] in image pixels

    def geometry(self) -> KeypointGeometry | None:
        """Pose and mouth geometry of the keypoints (None without keypoints)."""
        if self.kps is None:
            return None
        try:
            return keypoint_geometry(self.kps)
        except InputError:
            return None


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
    keypoints: KeypointCriteria = field(default_factory=KeypointCriteria)
    prefer: str = "farthest"

    def __post_init__(self) -> None:
        for name in ("uniqueness_threshold", "real_person_threshold"):
            check_threshold(getattr(self, name), name)
        check_choice(None, "prefer", self.prefer, PREFER)
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
        "expression": "expression",
        "pose": "not frontal",
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
    expression: str | None = None,
) -> list[Rejection]:
    """Every rule ``analysis`` breaks (empty: acceptable). Identity checks need an embedding; the
    expression (``expression``: ``neutral``/``smiling``/None) and pose checks need keypoints."""
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
    geom = analysis.geometry()
    if geom is not None:
        why = expression_problem(geom, expression, criteria.keypoints)
        if why:
            out.append(Rejection("expression", why))
        why = pose_problem(geom, criteria.keypoints)
        if why:
            out.append(Rejection("pose", why))
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


@dataclass
class Choice:
    """The outcome of :func:`choose_detailed`: the chosen candidate (None: none acceptable), per candidate
    the reasons it was not chosen and its nearest accepted identity (cosine, label; None without an
    embedding or with an empty index), and how the winner was picked."""

    index: int | None
    reasons: list[list[Rejection]]
    nearest: list[tuple[float, str] | None]
    rule: str
    passing: int

    def selection(self, criteria: SelectionCriteria) -> dict[str, Any]:
        """The provenance record of the decision (the margin of the winner)."""
        out: dict[str, Any] = {"rule": self.rule, "passing_candidates": self.passing}
        if self.index is None:
            return out
        near = self.nearest[self.index]
        if near is None:
            return out
        cos, label = near
        out.update(
            nearest_accepted=label,
            nearest_accepted_cosine=round(cos, 6),
            min_cosine_distance=round(1.0 - cos, 6),
            uniqueness_margin=round(criteria.uniqueness_threshold - cos, 6),
        )
        runner = [
            1.0 - self.nearest[i][0]  # type: ignore[index]
            for i, r in enumerate(self.reasons)
            if i != self.index and r and r[0].code == "not_chosen" and self.nearest[i] is not None
        ]
        out["lead_over_next"] = round((1.0 - cos) - max(runner), 6) if runner else None
        return out


def choose_detailed(
    analyses: Sequence[FaceAnalysis],
    *,
    gender: str | None,
    age: float | None,
    criteria: SelectionCriteria,
    accepted: IdentityIndex,
    real: IdentityIndex,
    names: Sequence[str] | None = None,
    expression: str | None = None,
) -> Choice:
    """Check every candidate of one identity and pick the winner (see the module docstring)."""
    reasons = [
        check_candidate(
            a, gender=gender, age=age, criteria=criteria, accepted=accepted, real=real, expression=expression
        )
        for a in analyses
    ]
    nearest: list[tuple[float, str] | None] = [None] * len(analyses)
    with_emb = [i for i, a in enumerate(analyses) if a.embedding is not None]
    if len(accepted) and with_emb:
        sims, pos = accepted.search(
            np.stack([np.asarray(analyses[i].embedding, np.float64) for i in with_emb])
        )
        for i, sim, p in zip(with_emb, sims, pos, strict=True):
            if p >= 0:
                nearest[i] = (float(sim), accepted.labels[int(p)])
    ok = [i for i, r in enumerate(reasons) if not r]
    if not ok:
        return Choice(None, reasons, nearest, criteria.prefer, 0)

    def dist(i: int) -> float:
        n = nearest[i]
        if n is None:  # nothing accepted yet (every candidate ties) or no embedding (least preferred)
            return math.inf if not len(accepted) else -math.inf
        return 1.0 - n[0]

    farthest = criteria.prefer == "farthest" and len(accepted) > 0
    if farthest:
        best = min(ok, key=lambda i: (-dist(i), *rank_key(analyses[i], age, i)))
        rule = "farthest"
    else:
        best = min(ok, key=lambda i: rank_key(analyses[i], age, i))
        rule = "detection" if criteria.prefer == "detection" else "detection (nothing accepted yet)"
    best_name = names[best] if names is not None else f"candidate {best}"
    for i in ok:
        if i == best:
            continue
        if farthest:
            why = (
                f"acceptable, but {best_name} is farther from the accepted identities "
                f"(min cosine distance {dist(best):.3f} vs {dist(i):.3f})"
            )
        else:
            why = (
                f"acceptable, but {best_name} ranks higher "
                f"(det {analyses[best].det_score:.2f} vs {analyses[i].det_score:.2f})"
            )
        reasons[i] = [Rejection("not_chosen", why)]
    return Choice(best, reasons, nearest, rule, len(ok))


def choose(
    analyses: Sequence[FaceAnalysis],
    *,
    gender: str | None,
    age: float | None,
    criteria: SelectionCriteria,
    accepted: IdentityIndex,
    real: IdentityIndex,
    names: Sequence[str] | None = None,
    expression: str | None = None,
) -> tuple[int | None, list[list[Rejection]]]:
    """Pick one of an identity's candidates (in candidate order).

    Returns the index of the chosen candidate (None if none is acceptable) and, per candidate, the
    reasons it was not chosen (empty for the chosen one; runners-up get a ``not_chosen`` reason).
    ``names`` label the candidates in those messages.
    """
    c = choose_detailed(
        analyses,
        gender=gender,
        age=age,
        criteria=criteria,
        accepted=accepted,
        real=real,
        names=names,
        expression=expression,
    )
    return c.index, c.reasons
