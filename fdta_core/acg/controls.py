"""Per-identity ControlNet images drawn from the planned attributes.

One drawn map for every identity caps diversity: every face gets the same outline, jaw, eyes and mouth
whatever the prompt asks for. Here each identity gets its own map, drawn from its attributes (face shape,
jawline, cheeks, eye / eyebrow / nose / lip shapes, expression, age lines) plus a per-identity jitter
(proportions, a small rotation, scale and position) drawn from the identity's own seed, in the two
formats SD 1.5 ControlNets read:

* ``edges``: white lines on black, like a Canny map of a frontal portrait (``control_v11p_sd15_canny``);
* ``openpose``: the 68 iBUG face landmarks plus the two pupils as white dots of radius 3 on black, the
  way the OpenPose face preprocessor (``openpose_faceonly``) draws them (``control_v11p_sd15_openpose``).

Determinism: the same identity (run seed, identity index, attributes, format, size) gives the same bytes
on any machine. Jitter comes from BLAKE2b seed derivation (:func:`fdta_core.seeds.derive_seed`), not from
a numpy bit generator; geometry uses only +, -, *, / and square roots (IEEE-exact, no trigonometry: the
rotation is parametrised by ``t = tan(angle / 2)``); curves are sampled at fixed parameters; and lines
are rasterised here with integer arithmetic on 1/16-pixel fixed-point coordinates (no anti-aliasing, no
library line drawing whose rounding could change between versions).

Coordinates: the face frame has its origin at the face centre, ``y`` down, and the face outline spans
``y`` from -1 (top of the forehead) to +1 (chin); ``x`` is in the same unit, so a face of width/height
ratio ``r`` spans ``x`` in ``[-r, r]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, check_choice
from ..seeds import derive_seed

#: Output formats (see the module docstring).
FORMATS: tuple[str, ...] = ("edges", "openpose")
#: Default side of a map; ``fdta controls`` writes 512 x 512.
CONTROL_SIZE = 512
#: Stage name in seed derivation and provenance.
STAGE = "controls"
#: Version of the drawing: recorded with every map, bumped when the drawing changes.
DRAWING_VERSION = 1
#: Line half-thickness in pixels at 512 (scaled with the map size) and OpenPose dot radius.
LINE_RADIUS = 1.0
DOT_RADIUS = 3
#: Fixed-point sub-pixel resolution of the rasteriser.
_FP = 16
#: Samples per curve.
_N = 24


# ----------------------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class FaceShape:
    """Outline of a face shape: ``ratio`` width/height; half-widths (fractions of the widest point) at the
    forehead, the jaw angle and the chin; ``jaw_y`` where the jaw angle sits (face units); ``cheek_y``
    where the face is widest."""

    ratio: float
    forehead: float
    jaw: float
    chin: float
    jaw_y: float = 0.5
    cheek_y: float = -0.12


#: Face shapes of the default spec (``fdta_core/prompts/default_spec.json``), by keyword.
FACE_SHAPES: dict[str, FaceShape] = {
    "oval": FaceShape(0.74, 0.90, 0.78, 0.36),
    "round": FaceShape(0.92, 0.92, 0.88, 0.48, jaw_y=0.45),
    "square": FaceShape(0.86, 0.97, 0.97, 0.62, jaw_y=0.58, cheek_y=-0.05),
    "heart": FaceShape(0.78, 1.00, 0.66, 0.22, jaw_y=0.45, cheek_y=-0.25),
    "long": FaceShape(0.60, 0.92, 0.80, 0.38),
    "diamond": FaceShape(0.75, 0.74, 0.70, 0.26),
    "oblong": FaceShape(0.66, 0.96, 0.94, 0.56, jaw_y=0.58),
    "triangular": FaceShape(0.80, 0.76, 1.00, 0.60, jaw_y=0.55, cheek_y=0.1),
}
#: Keyword order matters: "oblong" before "long"; unknown values fall back to ``oval`` (recorded).
_SHAPE_KEYS = (
    ("heart", "heart"),
    ("diamond", "diamond"),
    ("oblong", "oblong"),
    ("rectang", "oblong"),
    ("long", "long"),
    ("triang", "triangular"),
    ("pear", "triangular"),
    ("square", "square"),
    ("round", "round"),
    ("circular", "round"),
    ("oval", "oval"),
)


def _match(text: str | None, table: Sequence[tuple[str, Any]]) -> tuple[Any, str | None]:
    """First ``(keyword, value)`` of ``table`` whose keyword occurs in ``text``: ``(value, keyword)``."""
    low = (text or "").lower()
    for key, value in table:
        if key in low:
            return value, key
    return None, None


def face_shape_of(text: str | None) -> tuple[str, bool]:
    """``(shape name, matched)`` of a face-shape attribute; unknown text gives ``("oval", False)``."""
    name, _ = _match(text, _SHAPE_KEYS)
    return (name, True) if name else ("oval", False)


# jawline keyword -> (jaw half-width change, chin half-width change, jaw angle y change)
_JAW_KEYS = (
    ("wide square", (0.06, 0.08, 0.04)),
    ("square", (0.04, 0.06, 0.03)),
    ("strong", (0.04, 0.04, 0.02)),
    ("angular", (0.03, 0.02, 0.02)),
    ("defined", (0.02, 0.0, 0.0)),
    ("bearded", (0.03, 0.05, 0.0)),
    ("narrow", (-0.06, -0.04, 0.0)),
    ("tapered", (-0.05, -0.06, -0.02)),
    ("delicate", (-0.04, -0.03, 0.0)),
    ("soft", (-0.02, 0.0, -0.03)),
    ("round", (0.0, 0.02, -0.04)),
)
# eye keyword -> (half-width, upper lid height, lower lid height, outer-corner lift, crease, hood)
_EYE_KEYS = (
    ("almond", (0.135, 0.050, 0.030, 0.018, False, False)),
    ("deep", (0.115, 0.042, 0.030, 0.0, True, False)),
    ("hooded", (0.120, 0.038, 0.032, -0.006, False, True)),
    ("round", (0.115, 0.068, 0.050, 0.0, True, False)),
    ("narrow", (0.130, 0.036, 0.024, 0.008, False, False)),
    ("wide", (0.135, 0.060, 0.044, 0.0, True, False)),
)
_EYE_DEFAULT = (0.120, 0.055, 0.038, 0.004, True, False)
# eyebrow keyword -> (thickness, arch height, peak position 0..1 from inner end, gap above eye, length)
_BROW_KEYS = (
    ("bushy", (0.055, 0.025, 0.55, 0.150, 0.34)),
    ("thick", (0.045, 0.008, 0.55, 0.150, 0.33)),
    ("thin", (0.018, 0.060, 0.60, 0.170, 0.31)),
    ("arched", (0.030, 0.045, 0.60, 0.165, 0.32)),
    ("low", (0.035, 0.006, 0.50, 0.115, 0.32)),
    ("flat", (0.033, 0.004, 0.50, 0.140, 0.32)),
    ("sparse", (0.020, 0.020, 0.55, 0.160, 0.26)),
    ("angled", (0.034, 0.055, 0.70, 0.160, 0.32)),
    ("straight", (0.034, 0.008, 0.55, 0.150, 0.32)),
)
_BROW_DEFAULT = (0.030, 0.025, 0.55, 0.155, 0.32)
# nose keyword -> (nostril half-width, length change, bump of the bridge, tip lift)
_NOSE_KEYS = (
    ("wide flat", (0.165, -0.03, 0.0, 0.0)),
    ("broad", (0.160, 0.0, 0.0, 0.0)),
    ("narrow", (0.100, 0.01, 0.0, 0.0)),
    ("aquiline", (0.120, 0.03, 0.035, -0.01)),
    ("button", (0.115, -0.05, 0.0, 0.015)),
    ("long", (0.120, 0.06, 0.0, 0.0)),
    ("upturned", (0.120, -0.03, -0.01, 0.025)),
    ("small", (0.105, -0.03, 0.0, 0.0)),
)
_NOSE_DEFAULT = (0.125, 0.0, 0.0, 0.0)
# lips keyword -> (mouth half-width, upper lip height, lower lip height, cupid's bow depth, corner drop)
_LIP_KEYS = (
    ("plump", (0.205, 0.062, 0.085, 0.012, 0.0)),
    ("full", (0.205, 0.055, 0.078, 0.012, 0.0)),
    ("thin", (0.195, 0.024, 0.034, 0.006, 0.0)),
    ("wide", (0.245, 0.040, 0.055, 0.010, 0.0)),
    ("narrow", (0.160, 0.040, 0.055, 0.010, 0.0)),
    ("bow", (0.195, 0.048, 0.060, 0.026, 0.0)),
    ("downturned", (0.200, 0.040, 0.055, 0.010, 0.030)),
    ("medium", (0.200, 0.040, 0.055, 0.010, 0.0)),
)
_LIP_DEFAULT = (0.200, 0.040, 0.055, 0.010, 0.0)
# expression keyword -> (mouth corner lift, mouth widening, teeth showing)
_EXPR_KEYS = (
    ("broad smile", (0.055, 1.20, True)),
    ("grin", (0.055, 1.20, True)),
    ("laugh", (0.055, 1.20, True)),
    ("slight smile", (0.022, 1.07, False)),
    ("smil", (0.035, 1.12, False)),
)
# cheeks keyword -> (lower-cheek fullness, cheekbone height change)
_CHEEK_KEYS = (
    ("high cheekbone", (0.0, -0.08)),
    ("full", (0.05, 0.0)),
    ("hollow", (-0.05, 0.0)),
    ("flat", (-0.02, 0.04)),
)


# ----------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ControlParams:
    """Everything a map is drawn from (recorded in ``controls.json`` and in provenance)."""

    identity: int
    run_seed: int
    seed: int
    format: str
    size: int
    face_shape: str
    face_shape_matched: bool
    jawline: str | None
    eyes: str | None
    eyebrows: str | None
    nose: str | None
    lips: str | None
    expression: str | None
    cheeks: str | None
    # the numbers the drawing uses (face units unless said otherwise)
    ratio: float
    forehead: float
    jaw: float
    chin: float
    jaw_y: float
    cheek_y: float
    cheek_fullness: float
    eye_y: float
    eye_separation: float
    eye: tuple[float, float, float, float, bool, bool]
    brow: tuple[float, float, float, float, float]
    nose_y: float
    nostril: float
    nose_bump: float
    nose_tip_lift: float
    mouth_y: float
    lip: tuple[float, float, float, float, float]
    smile: float
    teeth: bool
    age_lines: bool
    neck: float
    scale: float
    rotation_t: float
    offset: tuple[float, float]
    version: int = DRAWING_VERSION

    @property
    def rotation_degrees(self) -> float:
        """The rotation in degrees (for people; the drawing uses ``rotation_t`` only)."""
        import math

        return round(math.degrees(2.0 * math.atan(self.rotation_t)), 3)

    def to_dict(self) -> dict[str, Any]:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d["rotation_degrees"] = self.rotation_degrees  # JSON-native: the same dict before and after JSON
        return d


def _u(run_seed: int, identity: int, name: str) -> float:
    """A uniform number in [0, 1) that depends only on (run seed, identity, name)."""
    return (derive_seed(int(run_seed), STAGE, int(identity), name) >> 10) / float(1 << 53)


def _q(x: float) -> float:
    """Round a parameter to 1e-6 so that what is recorded is exactly what is drawn."""
    return round(float(x), 6)


def control_params(
    identity: int,
    attributes: dict[str, Any],
    run_seed: int,
    *,
    fmt: str = "edges",
    size: int = CONTROL_SIZE,
    age: int | float | None = None,
    gender: str | None = None,
) -> ControlParams:
    """The drawing parameters of one identity: geometry from its attributes, jitter from its seed."""
    check_choice(None, "format", fmt, FORMATS)
    if int(size) < 64:
        raise InputError(f"control maps need a size of at least 64 pixels, got {size}", where="size")
    ident = int(identity)

    def jit(name: str, lo: float, hi: float) -> float:
        return lo + (hi - lo) * _u(run_seed, ident, name)

    shape_name, matched = face_shape_of(attributes.get("face_shape"))
    shape = FACE_SHAPES[shape_name]
    jaw_d, chin_d, jawy_d = _match(attributes.get("jawline"), _JAW_KEYS)[0] or (0.0, 0.0, 0.0)
    male = (gender or attributes.get("gender")) == "male"
    if male:
        jaw_d, chin_d = jaw_d + 0.02, chin_d + 0.03
    full, cheek_dy = _match(attributes.get("cheeks"), _CHEEK_KEYS)[0] or (0.0, 0.0)
    eye = _match(attributes.get("eyes"), _EYE_KEYS)[0] or _EYE_DEFAULT
    brow = _match(attributes.get("eyebrows"), _BROW_KEYS)[0] or _BROW_DEFAULT
    if male:
        brow = (brow[0] * 1.2, brow[1] * 0.7, brow[2], brow[3] - 0.01, brow[4])
    nose = _match(attributes.get("nose"), _NOSE_KEYS)[0] or _NOSE_DEFAULT
    lip = _match(attributes.get("lips"), _LIP_KEYS)[0] or _LIP_DEFAULT
    smile, widen, teeth = _match(attributes.get("expression"), _EXPR_KEYS)[0] or (0.0, 1.0, False)
    age_v = age if age is not None else attributes.get("age")
    try:
        old = age_v is not None and float(age_v) >= 45
    except (TypeError, ValueError):
        old = False
    ratio = shape.ratio * jit("ratio", 0.97, 1.03)
    return ControlParams(
        identity=ident,
        run_seed=int(run_seed),
        seed=derive_seed(int(run_seed), STAGE, ident),
        format=fmt,
        size=int(size),
        face_shape=shape_name,
        face_shape_matched=matched,
        jawline=attributes.get("jawline"),
        eyes=attributes.get("eyes"),
        eyebrows=attributes.get("eyebrows"),
        nose=attributes.get("nose"),
        lips=attributes.get("lips"),
        expression=attributes.get("expression"),
        cheeks=attributes.get("cheeks"),
        ratio=_q(ratio),
        forehead=_q(shape.forehead),
        jaw=_q(min(1.02, shape.jaw + jaw_d)),
        chin=_q(max(0.12, shape.chin + chin_d)),
        jaw_y=_q(shape.jaw_y + jawy_d),
        cheek_y=_q(shape.cheek_y + cheek_dy),
        cheek_fullness=_q(full),
        eye_y=_q(jit("eye_y", -0.16, -0.08)),
        eye_separation=_q(jit("eye_separation", 0.33, 0.39)),
        eye=tuple(_q(v) if isinstance(v, float) else v for v in eye),  # type: ignore[arg-type]
        brow=tuple(_q(v) for v in brow),  # type: ignore[arg-type]
        nose_y=_q(jit("nose_y", 0.24, 0.30) + nose[1]),
        nostril=_q(nose[0] * jit("nostril", 0.95, 1.05)),
        nose_bump=_q(nose[2]),
        nose_tip_lift=_q(nose[3]),
        mouth_y=_q(jit("mouth_y", 0.52, 0.58) + 0.5 * nose[1]),
        lip=(
            _q(lip[0] * widen * jit("mouth_width", 0.95, 1.05)),
            _q(lip[1]),
            _q(lip[2]),
            _q(lip[3]),
            _q(lip[4]),
        ),
        smile=_q(smile),
        teeth=bool(teeth),
        age_lines=bool(old or smile >= 0.03),
        neck=_q((0.30 if male else 0.25) * jit("neck", 0.95, 1.05)),
        scale=_q(jit("scale", 0.92, 1.06)),
        rotation_t=_q(jit("rotation", -0.05, 0.05)),  # tan(angle/2): about +-5.7 degrees
        offset=(_q(jit("dx", -0.035, 0.035)), _q(jit("dy", -0.03, 0.03))),
    )


# ----------------------------------------------------------------------------------------- geometry
def _catmull_rom(points: Sequence[tuple[float, float]], closed: bool, n: int = _N) -> np.ndarray:
    """A uniform Catmull-Rom spline through ``points`` (pure arithmetic), ``n`` samples per span."""
    p = np.asarray(points, np.float64)
    m = len(p)
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]])
        spans = m
    else:
        ext = np.concatenate([p[:1], p, p[-1:]])
        spans = m - 1
    t = np.arange(n, dtype=np.float64) / n
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(spans):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        a = 2.0 * p1
        b = p2 - p0
        c = 2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3
        d = 3.0 * p1 - p0 - 3.0 * p2 + p3
        out.append(0.5 * (a[None] + b[None] * t[:, None] + c[None] * t2[:, None] + d[None] * t3[:, None]))
    if closed:
        out.append(p[:1])
    else:
        out.append(p[-1:])
    return np.concatenate(out)


def _bezier(*ctrl: tuple[float, float], n: int = _N) -> np.ndarray:
    """Cubic (4 points) or quadratic (3 points) Bezier curve, ``n + 1`` samples."""
    c = np.asarray(ctrl, np.float64)
    t = (np.arange(n + 1, dtype=np.float64) / n)[:, None]
    s = 1.0 - t
    if len(c) == 3:
        return s * s * c[0] + 2.0 * s * t * c[1] + t * t * c[2]
    return s * s * s * c[0] + 3.0 * s * s * t * c[1] + 3.0 * s * t * t * c[2] + t * t * t * c[3]


def _bezier_at(ctrl: Sequence[tuple[float, float]], ts: Iterable[float]) -> np.ndarray:
    c = np.asarray(ctrl, np.float64)
    out = []
    for t in ts:
        s = 1.0 - t
        if len(c) == 3:
            out.append(s * s * c[0] + 2.0 * s * t * c[1] + t * t * c[2])
        else:
            out.append(s * s * s * c[0] + 3.0 * s * s * t * c[1] + 3.0 * s * t * t * c[2] + t * t * t * c[3])
    return np.asarray(out)


def _circle(cx: float, cy: float, r: float, n: int = 32) -> np.ndarray:
    """A closed circle from the rational parametrisation (no trigonometry)."""
    t = np.arange(-n // 4, n // 4 + 1, dtype=np.float64) / (n // 4)  # tan(theta/2) in [-1, 1]: half circle
    x = (1.0 - t * t) / (1.0 + t * t)
    y = 2.0 * t / (1.0 + t * t)
    right = np.stack([cx + r * x, cy + r * y], axis=1)
    left = np.stack([cx - r * x[::-1][1:], cy + r * y[::-1][1:]], axis=1)
    return np.concatenate([right, left])


def _mirror(pts: np.ndarray) -> np.ndarray:
    out = pts.copy()
    out[:, 0] = -out[:, 0]
    return out


@dataclass
class FaceDrawing:
    """The curves of one face in face units: ``lines`` (name -> list of polylines, each ``[K, 2]``,
    a closed one repeats its first point) and ``landmarks`` ``[70, 2]`` (68 iBUG points + 2 pupils)."""

    lines: dict[str, list[np.ndarray]] = field(default_factory=dict)
    landmarks: np.ndarray | None = None

    def add(self, name: str, *polys: np.ndarray) -> None:
        self.lines.setdefault(name, []).extend(polys)


def _outline_side(p: ControlParams) -> list[tuple[float, float]]:
    """Anchor points of the right half of the outline, top to chin (face units)."""
    r = p.ratio
    lower = 0.5 * (1.0 + p.jaw) + p.cheek_fullness
    mid_y = 0.5 * (p.cheek_y + p.jaw_y)
    return [
        (0.0, -1.0),
        (0.58 * p.forehead * r, -0.90),
        (0.90 * p.forehead * r, -0.58),
        (r, p.cheek_y),
        (min(1.0, lower) * r, mid_y),
        (p.jaw * r, p.jaw_y),
        (p.chin * r, 0.90),
        (0.45 * p.chin * r, 0.985),
    ]


def face_drawing(p: ControlParams) -> FaceDrawing:
    """All curves and landmarks of the face ``p`` describes (face units, before jitter)."""
    d = FaceDrawing()
    side = _outline_side(p)
    left = [(-x, y) for x, y in reversed(side[1:])]
    ring = [*side, (0.0, 1.0), *left]
    outline = _catmull_rom(ring, closed=True)
    d.add("outline", outline)
    # hair / crown arc and ears, as the drawn default map has them
    r = p.ratio
    crown = [(r + 0.09, -0.28), (0.82 * r + 0.08, -0.88), (0.0, -1.14)]
    d.add("hair", _catmull_rom([*crown, *[(-x, y) for x, y in reversed(crown[:-1])]], closed=False))
    ey, ny = p.eye_y, p.nose_y
    ear = _bezier((r - 0.005, ey - 0.02), (r + 0.13, ey - 0.10), (r + 0.11, ny + 0.04), (r - 0.04, ny + 0.06))
    d.add("ears", ear, _mirror(ear))
    # neck: from just under the jaw line down, separate from the outline (a 0.03 gap)
    right = outline[: len(outline) // 2]
    below = right[(right[:, 1] > p.jaw_y) & (right[:, 0] <= p.neck)]
    ny0 = float(below[0, 1]) + 0.03 if len(below) else 0.95
    neck = np.array([[p.neck, ny0], [p.neck + 0.04, 1.55]])
    d.add("neck", neck, _mirror(neck))

    # eyes (image-left eye = subject's right eye = iBUG 36-41)
    ew, up, lo, lift, crease, hood = p.eye
    sep = p.eye_separation
    pupils = []
    eye_pts: list[np.ndarray] = []
    for sgn in (-1.0, 1.0):
        cx = sgn * sep
        inner = (cx - sgn * ew, ey)
        outer = (cx + sgn * ew, ey - lift)
        upper = (
            inner,
            (cx - sgn * 0.35 * ew, ey - 1.9 * up),
            (cx + sgn * 0.45 * ew, ey - 1.9 * up - lift),
            outer,
        )
        lower = (
            outer,
            (cx + sgn * 0.45 * ew, ey + 1.3 * lo - lift),
            (cx - sgn * 0.4 * ew, ey + 1.3 * lo),
            inner,
        )
        d.add("eyes", _bezier(*upper), _bezier(*lower))
        iris_r = min(0.75 * (up + lo), 0.06)
        d.add("eyes", _circle(cx, ey + 0.1 * lo, iris_r * 0.95))
        if crease:
            d.add(
                "eyes",
                _bezier(
                    (cx - sgn * 0.8 * ew, ey - up - 0.02),
                    (cx, ey - 2.3 * up - 0.02),
                    (cx + sgn * 1.05 * ew, ey - up - 0.01 - lift),
                ),
            )
        if hood:
            d.add(
                "eyes",
                _bezier(
                    (cx - sgn * 0.9 * ew, ey - up - 0.005),
                    (cx + sgn * 0.2 * ew, ey - 2.0 * up - 0.01),
                    (cx + sgn * 1.15 * ew, ey - 0.3 * up),
                ),
            )
        pupils.append((cx, ey + 0.1 * lo))
        # iBUG order: outer, upper (2), inner, lower (2) for the left-of-image eye; inner first for the other
        u2 = _bezier_at(upper, (1 / 3, 2 / 3))
        l2 = _bezier_at(lower, (1 / 3, 2 / 3))
        if (
            sgn < 0
        ):  # image-left eye: 36 outer, 37 38 upper (outer->inner), 39 inner, 40 41 lower (inner->outer)
            eye_pts.append(np.array([outer, u2[1], u2[0], inner, l2[1], l2[0]]))
        else:  # 42 inner, 43 44 upper (inner->outer), 45 outer, 46 47 lower (outer->inner)
            eye_pts.append(np.array([inner, u2[0], u2[1], outer, l2[0], l2[1]]))

    # eyebrows: closed shapes (a Canny map shows a brow's outline), thickness from the attribute
    th, arch, peak, gap, length = p.brow
    brow_pts = []
    for sgn in (-1.0, 1.0):
        x_in = sgn * (sep - ew * 0.95)
        x_out = x_in + sgn * length
        base = ey - gap
        xp = x_in + sgn * peak * length
        ctrl_mid = (
            (x_in, base),
            (x_in + sgn * 0.5 * peak * length, base - arch * 1.2),
            (xp, base - arch),
            (x_out, base + 0.02),
        )
        mid = _bezier(*ctrl_mid)
        top = mid.copy()
        top[:, 1] -= th * 0.5 * (1.0 - 0.5 * (np.arange(len(mid)) / (len(mid) - 1)))
        bot = mid.copy()
        bot[:, 1] += th * 0.5 * (1.0 - 0.5 * (np.arange(len(mid)) / (len(mid) - 1)))
        d.add("eyebrows", np.concatenate([top, bot[::-1], top[:1]]))
        five = _bezier_at(ctrl_mid, (0.0, 0.25, 0.5, 0.75, 1.0))
        brow_pts.append(five[::-1] if sgn < 0 else five)  # 17-21 outer->inner, 22-26 inner->outer

    # nose
    nw, bump, tip = p.nostril, p.nose_bump, p.nose_tip_lift
    ty = ny - tip
    bridge = _bezier(
        (-0.05, ey + 0.06), (-0.07 - bump, 0.5 * (ey + ny)), (-0.075, ty - 0.10), (-0.08, ty - 0.05)
    )
    d.add("nose", bridge)
    wing = _bezier(
        (-0.55 * nw, ty - 0.07), (-1.15 * nw, ty - 0.04), (-1.1 * nw, ty + 0.025), (-0.55 * nw, ty + 0.02)
    )
    d.add("nose", wing, _mirror(wing))
    tip_curve = _bezier(
        (-0.45 * nw, ty + 0.025), (-0.15 * nw, ty + 0.055), (0.15 * nw, ty + 0.055), (0.45 * nw, ty + 0.025)
    )
    d.add("nose", tip_curve)
    if tip > 0.01:  # upturned / button: nostrils visible
        d.add("nose", _circle(-0.45 * nw, ty + 0.01, 0.02), _circle(0.45 * nw, ty + 0.01, 0.02))
    nose_bridge = np.array([[0.0, ey + 0.02 + k * (ty - 0.02 - ey - 0.02) / 3.0] for k in range(4)])
    nostrils = np.array(
        [
            [-0.8 * nw, ty + 0.01],
            [-0.4 * nw, ty + 0.035],
            [0.0, ty + 0.05],
            [0.4 * nw, ty + 0.035],
            [0.8 * nw, ty + 0.01],
        ]
    )

    # mouth
    mw, uh, lh, bow, drop = p.lip
    my = p.mouth_y
    cy = my - p.smile + drop  # corner height
    line = ((-mw, cy), (-0.35 * mw, my + 0.6 * p.smile), (0.35 * mw, my + 0.6 * p.smile), (mw, cy))
    gap = 0.045 if p.teeth else 0.0
    top_l = ((-mw, cy), (-0.6 * mw, my - uh - 0.01), (-0.35 * mw, my - uh - bow), (0.0, my - uh + bow))
    top_r = tuple((-x, y) for x, y in reversed(top_l))
    bottom = ((mw, cy), (0.5 * mw, my + gap + 2.0 * lh), (-0.5 * mw, my + gap + 2.0 * lh), (-mw, cy))
    d.add("lips", _bezier(*top_l), _bezier(*top_r), _bezier(*bottom), _bezier(*line))
    inner_low = None
    if p.teeth:
        inner_low = (
            (-0.85 * mw, cy + 0.005),
            (-0.35 * mw, my + gap + 0.8 * p.smile),
            (0.35 * mw, my + gap + 0.8 * p.smile),
            (0.85 * mw, cy + 0.005),
        )
        d.add("lips", _bezier(*inner_low))
    # outer lip 48-59: 48 left corner, 49 50 upper left, 51 top centre, 52 53 upper right, 54 right corner,
    # 55 56 lower right, 57 bottom centre, 58 59 lower left; inner 60-67 the same way on the mouth line
    ul = _bezier_at(top_l, (0.4, 0.75))
    ur = _bezier_at(top_r, (0.25, 0.6))
    bt = _bezier_at(bottom, (0.2, 0.35, 0.5, 0.65, 0.8))
    outer_lip = np.array([top_l[0], ul[0], ul[1], top_l[3], ur[0], ur[1], top_r[3], *bt])
    il = _bezier_at(line, (0.25, 0.5, 0.75))
    low_src = inner_low if inner_low is not None else line
    ll = _bezier_at(low_src, (0.75, 0.5, 0.25))
    inner_lip = np.array([[-0.9 * mw, cy], il[0], il[1], il[2], [0.9 * mw, cy], ll[0], ll[1], ll[2]])

    if p.age_lines:  # nasolabial folds (age or a smile)
        fold = _bezier(
            (-1.2 * nw, ty + 0.01),
            (-1.6 * nw - 0.03, my - 0.08),
            (-mw - 0.06, my - 0.02),
            (-mw - 0.04, my + 0.04),
        )
        d.add("folds", fold, _mirror(fold))

    # jaw 0-16: along the outline from the image-left side at eye level, down to the chin and up again
    jaw = _jaw_points(outline, ey)
    d.landmarks = np.concatenate(
        [
            jaw,
            brow_pts[0],
            brow_pts[1],
            nose_bridge,
            nostrils,
            eye_pts[0],
            eye_pts[1],
            outer_lip,
            inner_lip,
            np.asarray(pupils),
        ]
    ).astype(np.float64)
    assert d.landmarks.shape == (70, 2), d.landmarks.shape
    return d


def _jaw_points(outline: np.ndarray, eye_y: float) -> np.ndarray:
    """17 points at equal arc length on the lower outline between the two sides at eye level."""
    half = len(outline) // 2
    right = outline[:half]
    left = outline[half:]
    # the lower arc: the right side below eye level, then the left side down to eye level
    arc = np.concatenate([right[right[:, 1] >= eye_y], left[left[:, 1] >= eye_y]])
    arc = arc[::-1]  # image-left (x < 0) first, as iBUG point 0
    seg = np.sqrt(((arc[1:] - arc[:-1]) ** 2).sum(axis=1))
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    targets = cum[-1] * np.arange(17, dtype=np.float64) / 16.0
    idx = np.searchsorted(cum, targets, side="left").clip(1, len(arc) - 1)
    a, b = arc[idx - 1], arc[idx]
    span = (cum[idx] - cum[idx - 1])[:, None]
    w = np.where(span > 0, (targets[:, None] - cum[idx - 1][:, None]) / np.where(span > 0, span, 1.0), 0.0)
    return a + (b - a) * w


def _to_pixels(pts: np.ndarray, p: ControlParams) -> np.ndarray:
    """Face units -> pixels: rotation (rational in ``t = tan(angle/2)``), scale, centre and offset."""
    t = p.rotation_t
    c = (1.0 - t * t) / (1.0 + t * t)
    s = 2.0 * t / (1.0 + t * t)
    unit = 0.27 * p.size * p.scale  # half the face height in pixels
    cx = p.size * (0.5 + p.offset[0])
    cy = p.size * (0.5 + p.offset[1])
    x = pts[:, 0] * c - pts[:, 1] * s
    y = pts[:, 0] * s + pts[:, 1] * c
    return np.stack([cx + unit * x, cy + unit * y], axis=1)


# ----------------------------------------------------------------------------------------- raster
def _stroke(canvas: np.ndarray, poly: np.ndarray, radius: float) -> None:
    """Draw a polyline (pixel coordinates, pixel centres at +0.5) into a bool canvas, integer-exactly."""
    h, w = canvas.shape
    q = np.rint(poly * _FP).astype(np.int64)
    rr = int(round(radius * _FP))
    r2 = rr * rr
    for k in range(len(q) - 1):
        ax, ay = int(q[k, 0]), int(q[k, 1])
        bx, by = int(q[k + 1, 0]), int(q[k + 1, 1])
        x0 = max(0, (min(ax, bx) - rr) // _FP - 1)
        x1 = min(w - 1, (max(ax, bx) + rr) // _FP + 1)
        y0 = max(0, (min(ay, by) - rr) // _FP - 1)
        y1 = min(h - 1, (max(ay, by) + rr) // _FP + 1)
        if x0 > x1 or y0 > y1:
            continue
        px = np.arange(x0, x1 + 1, dtype=np.int64) * _FP + _FP // 2
        py = np.arange(y0, y1 + 1, dtype=np.int64) * _FP + _FP // 2
        wx = px[None, :] - ax
        wy = py[:, None] - ay
        dx, dy = bx - ax, by - ay
        len2 = dx * dx + dy * dy
        dot = wx * dx + wy * dy
        d2a = wx * wx + wy * wy
        d2b = (px[None, :] - bx) ** 2 + (py[:, None] - by) ** 2
        if len2 == 0:
            hit = d2a <= r2
        else:
            cross = wx * dy - wy * dx
            hit = np.where(dot <= 0, d2a <= r2, np.where(dot >= len2, d2b <= r2, cross * cross <= r2 * len2))
        canvas[y0 : y1 + 1, x0 : x1 + 1] |= hit


def _dots(canvas: np.ndarray, pts: np.ndarray, radius: int) -> None:
    """Filled dots at integer pixel positions (``int(x)``, as the OpenPose drawer truncates)."""
    h, w = canvas.shape
    r2 = radius * radius + radius  # the rounder disc OpenCV draws for small radii
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = (xx * xx + yy * yy) <= r2
    for x, y in np.floor(pts).astype(np.int64):
        if not (0 <= x < w and 0 <= y < h):
            continue
        y0, y1 = max(0, y - radius), min(h, y + radius + 1)
        x0, x1 = max(0, x - radius), min(w, x + radius + 1)
        canvas[y0:y1, x0:x1] |= disc[
            y0 - (y - radius) : y1 - (y - radius), x0 - (x - radius) : x1 - (x - radius)
        ]


#: Parts of an edge map, in drawing order.
PARTS: tuple[str, ...] = ("outline", "hair", "ears", "neck", "eyes", "eyebrows", "nose", "lips", "folds")


def render(p: ControlParams, parts: Sequence[str] | None = None) -> np.ndarray:
    """The map of ``p`` as uint8 ``[size, size, 3]``, white on black. ``parts`` limits an edge map to
    some of :data:`PARTS` (tests measure the outline alone); an OpenPose map is always all its dots."""
    d = face_drawing(p)
    canvas = np.zeros((p.size, p.size), bool)
    if p.format == "openpose":
        _dots(canvas, _to_pixels(d.landmarks, p), max(1, round(DOT_RADIUS * p.size / CONTROL_SIZE)))
    else:
        radius = LINE_RADIUS * max(1.0, p.size / CONTROL_SIZE)
        for name in PARTS if parts is None else parts:
            for poly in d.lines.get(name, []):
                _stroke(canvas, _to_pixels(poly, p), radius)
    img = np.where(canvas, np.uint8(255), np.uint8(0))
    return np.repeat(img[:, :, None], 3, axis=2)


def landmarks_pixels(p: ControlParams) -> np.ndarray:
    """The 70 OpenPose face points of ``p`` in pixels ``[70, 2]`` (68 iBUG landmarks + 2 pupils)."""
    return _to_pixels(face_drawing(p).landmarks, p)


# ----------------------------------------------------------------------------------------- plans
@dataclass
class ControlMaps:
    """Maps of a plan's identities, in plan order, with the parameters each was drawn from."""

    images: np.ndarray  # uint8 [N, size, size, 3]
    params: list[ControlParams]

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able record per identity (``controls.json``, provenance)."""
        return [p.to_dict() for p in self.params]


def plan_params(plan: Any, *, fmt: str = "edges", size: int = CONTROL_SIZE) -> list[ControlParams]:
    """Drawing parameters of every identity of an ``IdentityPlan`` (plan order)."""
    return [
        control_params(
            int(spec.index),
            dict(spec.attributes),
            int(plan.run_seed),
            fmt=fmt,
            size=size,
            age=spec.age,
            gender=spec.gender,
        )
        for spec in plan.identities
    ]


def plan_maps(
    plan: Any, *, fmt: str = "edges", size: int = CONTROL_SIZE, progress: Any = None
) -> ControlMaps:
    """Draw the map of every identity of ``plan``; ``progress(done, total)`` after each."""
    params = plan_params(plan, fmt=fmt, size=size)
    if not params:
        raise InputError(
            "the identity plan is empty", where="plan", fix="give the spec an identity_count >= 1."
        )
    out = np.zeros((len(params), size, size, 3), np.uint8)
    for i, p in enumerate(params):
        out[i] = render(p)
        if progress is not None:
            progress(i + 1, len(params))
    return ControlMaps(out, params)


def preview_grid(maps: ControlMaps, *, tile: int = 160, columns: int = 8) -> np.ndarray:
    """The maps in rows of ``columns`` with identity and face shape under each (``fdta_core.grid``)."""
    from ..grid import WHITE, Cell, render_grid

    cells = [
        Cell(img, lines=[(f"id {p.identity}", WHITE), (p.face_shape[:18], WHITE)])
        for img, p in zip(maps.images, maps.params, strict=True)
    ]
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    return render_grid(rows, tile=tile, gap=4, caption_height=28, n_cols=min(columns, len(cells)))


def outline_ratio(image: np.ndarray) -> float:
    """Width/height of the white pixels' bounding box (of an outline-only map)."""
    ys, xs = np.nonzero(np.asarray(image)[..., 0] > 127)
    if not len(xs):
        raise InputError("the map is empty", where="outline_ratio")
    return float(xs.max() - xs.min() + 1) / float(ys.max() - ys.min() + 1)
