"""Expression and head pose from the detector's five keypoints (left eye, right eye, nose tip, left and
right mouth corner; image left/right, as SCRFD returns them).

Everything is measured in a frame that removes the in-plane rotation (roll) and the size of the face:
the origin is the midpoint of the eyes, the x axis runs from the left eye to the right eye, and the unit
is the inter-ocular distance (IOD). In that frame:

* **roll** is the angle of the eye line against the image's horizontal;
* **yaw** comes from the nose tip's sideways offset: a head turned by ``yaw`` moves the nose tip, which
  sits about ``NOSE_DEPTH`` IOD in front of the eyes, by ``NOSE_DEPTH * tan(yaw)`` IOD relative to the
  eyes (a weak-perspective head model), so ``yaw = atan(offset / NOSE_DEPTH)``; 0.45 is the nose depth
  of the common 3D reference head used for PnP head pose (nose tip 135 units in front of eye centres
  about 300 apart) rounded up;
* **pitch** comes from where the nose tip falls between the eye line and the mouth line: 0.495 on the
  ArcFace template (a frontal face), smaller when the head tilts up, larger when it tilts down;
* **mouth ratio** is the mouth-corner distance over the IOD: 0.83 on the ArcFace template (the mean of
  mostly neutral faces); a smile pulls the corners apart by 15-30 %, so a ratio from about 0.95 up reads
  as smiling.

These are coarse, model-free estimates (five points cannot see a closed-lip smile that barely moves the
corners, nor separate a turned head from an asymmetric face). Thresholds therefore leave a band in which
both readings pass (:class:`KeypointCriteria`), and prompts that ask for a *slight* smile are not checked.
A pack with a dense landmark model could measure more; the rules here need only the detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

#: Nose-tip depth in front of the eye centres, in IODs (weak-perspective yaw model above).
NOSE_DEPTH = 0.45
#: Nose position between the eye line (0) and the mouth line (1) on the frontal ArcFace template.
FRONTAL_NOSE_POSITION = 0.495
#: Mouth-corner distance / IOD on the ArcFace template (a mean, near-neutral face).
NEUTRAL_MOUTH_RATIO = 0.83

#: Expressions a plan can ask for that five keypoints can check.
EXPRESSIONS: tuple[str, ...] = ("neutral", "smiling")

_SMILE_WORDS = ("smil", "grin", "laugh", "beam")
_SUBTLE_WORDS = ("slight", "faint", "subtle", "hint", "soft smile", "gentle smile")
_NEUTRAL_WORDS = ("neutral", "serious", "calm", "relaxed", "stern", "expressionless", "straight face")


def planned_expression(text: str | None) -> str | None:
    """``smiling``, ``neutral`` or None (not checkable: empty, subtle or unknown) for an expression
    attribute. A *slight* smile is left unchecked: it barely moves the mouth corners."""
    low = (text or "").lower()
    if any(w in low for w in _SMILE_WORDS):
        return None if any(w in low for w in _SUBTLE_WORDS) else "smiling"
    if any(w in low for w in _NEUTRAL_WORDS):
        return "neutral"
    return None


@dataclass(frozen=True)
class KeypointGeometry:
    """What the five keypoints say about a face (see the module docstring for the geometry)."""

    roll: float  # degrees, positive = clockwise in the image
    yaw: float  # degrees, sign: nose towards image right is positive
    pitch_position: float  # nose between eye line (0) and mouth line (1)
    mouth_ratio: float  # mouth-corner distance / IOD
    iod: float  # pixels

    def to_dict(self) -> dict[str, float]:
        return {
            "roll": round(self.roll, 2),
            "yaw": round(self.yaw, 2),
            "pitch_position": round(self.pitch_position, 4),
            "mouth_ratio": round(self.mouth_ratio, 4),
            "iod": round(self.iod, 2),
        }


def keypoint_geometry(kps: Any) -> KeypointGeometry:
    """Geometry of five keypoints ``[5, 2]`` (pixels)."""
    k = np.asarray(kps, np.float64).reshape(-1, 2)
    if k.shape != (5, 2) or not np.all(np.isfinite(k)):
        raise InputError(f"expected 5 finite keypoints [5, 2], got {list(k.shape)}", where="keypoints")
    le, re, nose, lm, rm = k
    ev = re - le
    iod = float(math.hypot(ev[0], ev[1]))
    if iod <= 1e-6:
        raise InputError("the two eye keypoints coincide", where="keypoints")
    c, s = ev[0] / iod, ev[1] / iod
    mid = 0.5 * (le + re)

    def frame(p: np.ndarray) -> tuple[float, float]:
        d = p - mid
        return (float(d[0] * c + d[1] * s) / iod, float(-d[0] * s + d[1] * c) / iod)

    nx, ny = frame(nose)
    lmx, lmy = frame(lm)
    rmx, rmy = frame(rm)
    mouth_y = 0.5 * (lmy + rmy)
    pitch = ny / mouth_y if mouth_y > 1e-6 else float("nan")
    return KeypointGeometry(
        roll=math.degrees(math.atan2(ev[1], ev[0])),
        yaw=math.degrees(math.atan(nx / NOSE_DEPTH)),
        pitch_position=pitch,
        mouth_ratio=math.hypot(rmx - lmx, rmy - lmy),
        iod=iod,
    )


@dataclass(frozen=True)
class KeypointCriteria:
    """Tolerances of the expression and pose checks.

    Expression: a face planned ``smiling`` needs ``mouth_ratio >= smile_ratio - expression_margin``; one
    planned ``neutral`` needs ``mouth_ratio <= smile_ratio + expression_margin`` (the band between passes
    both: five points cannot decide there). Pose: ``|yaw| <= max_yaw``, ``|roll| <= max_roll`` and the
    nose within ``max_pitch_offset`` of its frontal position between eyes and mouth.
    """

    check_expression: bool = True
    smile_ratio: float = 0.95
    expression_margin: float = 0.04
    check_pose: bool = True
    max_yaw: float = 20.0
    max_roll: float = 20.0
    max_pitch_offset: float = 0.15

    def __post_init__(self) -> None:
        for name in ("smile_ratio", "expression_margin", "max_yaw", "max_roll", "max_pitch_offset"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a number >= 0, got {v!r}", where=name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check_expression": self.check_expression,
            "smile_ratio": self.smile_ratio,
            "expression_margin": self.expression_margin,
            "check_pose": self.check_pose,
            "max_yaw": self.max_yaw,
            "max_roll": self.max_roll,
            "max_pitch_offset": self.max_pitch_offset,
        }


def expression_problem(geom: KeypointGeometry, planned: str | None, crit: KeypointCriteria) -> str | None:
    """Why the mouth contradicts the planned expression, or None."""
    if not crit.check_expression or planned is None:
        return None
    r = geom.mouth_ratio
    if planned == "smiling" and r < crit.smile_ratio - crit.expression_margin:
        return f"looks neutral (mouth/eyes {r:.2f} < {crit.smile_ratio - crit.expression_margin:.2f}), planned smiling"
    if planned == "neutral" and r > crit.smile_ratio + crit.expression_margin:
        return f"looks smiling (mouth/eyes {r:.2f} > {crit.smile_ratio + crit.expression_margin:.2f}), planned neutral"
    return None


def pose_problem(geom: KeypointGeometry, crit: KeypointCriteria) -> str | None:
    """Why the head is not frontal within the tolerances, or None."""
    if not crit.check_pose:
        return None
    bad = []
    if abs(geom.yaw) > crit.max_yaw:
        bad.append(f"yaw {geom.yaw:+.0f}° > ±{crit.max_yaw:g}°")
    if abs(geom.roll) > crit.max_roll:
        bad.append(f"roll {geom.roll:+.0f}° > ±{crit.max_roll:g}°")
    off = geom.pitch_position - FRONTAL_NOSE_POSITION
    if not math.isfinite(off) or abs(off) > crit.max_pitch_offset:
        bad.append(
            f"pitch (nose at {geom.pitch_position:.2f} of eyes->mouth, frontal {FRONTAL_NOSE_POSITION})"
        )
    return "not frontal: " + ", ".join(bad) if bad else None
