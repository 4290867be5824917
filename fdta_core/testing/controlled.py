"""A face pack whose outputs are known functions of the image, for end-to-end tests that must know in
advance what the face checks will decide.

Random-weight generators draw no face a real detector would accept, and a random ArcFace gives
similarities nobody can predict. :func:`make_controlled_face_pack` writes ONNX models with the real
insightface signatures (so the real loading, pre-processing, alignment and post-processing code runs on
them) whose behaviour is set by the test:

* ``det_10g.onnx`` finds exactly one face in every square image: centred, its box the whole image, its
  five landmarks the ArcFace template scaled to the image, so alignment is a plain resize. The score is
  ``det_score`` at the centre anchor of stride 32 and about zero everywhere else (the graph computes
  anchor positions from the input's own shape, so any detector size works). ``keypoints`` replaces the
  template by other five points (in 112-template coordinates, scaled to the image the same way), so a
  test decides what the expression and pose checks read: a smile, a turned head.
* ``genderage.onnx`` says ``gender`` and ``age`` for every face: a test plans identities of other
  genders or ages and knows that every candidate of those identities is rejected, and why.
* ``w600k_r50.onnx`` returns ``e(x) = [sqrt(c0), sqrt(1 - c0) * t(x), 0, ...]`` (512-d), where ``t(x)``
  is the unit-length texture of the face (grey levels pooled to 16x16 minus their 4x4-block means).
  So two faces with unrelated textures have cosine ``c0 + (1 - c0) t . t'`` around ``c0 =
  identity_floor`` and a face compared with itself has cosine 1. White noise gives ``|t . t'|`` of about
  0.065; images of one random-weight generator share its fixed patterns, and some pairs reach 0.3, so
  tests allow a generous spread. A high floor (0.75) makes a generator that always draws the same
  person: every later identity is a duplicate at the usual 0.3, and every styled image keeps its CSIM.
  :func:`controlled_embedding` is the same function in numpy, for tests to check decisions against.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..faces.align import ARCFACE_TEMPLATE_112
from .faces import export_onnx

#: Side of the pooled grey image the texture is taken from, and of the blocks whose mean is removed.
TEXTURE_GRID = 16
TEXTURE_BLOCK = 4
EMBEDDING_DIM = 512
DET_STRIDE = 32
_GAIN = 20.0


def _torch():
    import torch

    return torch


def _centred_detector(det_score: float, keypoints: np.ndarray | None = None):
    torch = _torch()
    f = torch.nn.functional
    # score = sigmoid(gain * (base - distance of the anchor from the image centre, in strides))
    base = math.log(det_score / (1.0 - det_score)) / _GAIN
    pts = ARCFACE_TEMPLATE_112 if keypoints is None else np.asarray(keypoints, np.float64)
    kps_unit = torch.tensor(pts / 112.0 - 0.5, dtype=torch.float32)  # fraction of side

    class CentredSCRFD(torch.nn.Module):
        def forward(self, x):
            ones = x[:, :1] * 0.0 + 1.0  # [1, 1, H, W]
            col = torch.cumsum(ones, dim=3) - 1.0
            row = torch.cumsum(ones, dim=2) - 1.0
            width = ones.sum(dim=3, keepdim=True)  # [1, 1, H, 1]
            height = ones.sum(dim=2, keepdim=True)  # [1, 1, 1, W]
            scores, boxes, kpss = [], [], []
            for s in (8, 16, 32):
                # pooled coordinate = anchor + (s - 1) / 2; distance of the anchor from the centre
                dx = (f.avg_pool2d(col - width / 2.0, s, s) - (s - 1) / 2.0).abs() / DET_STRIDE
                dy = (f.avg_pool2d(row - height / 2.0, s, s) - (s - 1) / 2.0).abs() / DET_STRIDE
                logit = _GAIN * (base - dx - dy) if s == DET_STRIDE else dx * 0.0 - 50.0
                sc = torch.sigmoid(logit).repeat(1, 2, 1, 1)
                w = f.avg_pool2d(width.expand_as(col), s, s)
                h = f.avg_pool2d(height.expand_as(row), s, s)
                box = torch.cat([w / 2, h / 2, w / 2, h / 2], dim=1) / s  # ltrb distances in strides
                kx = [kps_unit[i, 0] * w / s for i in range(5)]
                ky = [kps_unit[i, 1] * h / s for i in range(5)]
                kps = torch.cat([v for pair in zip(kx, ky, strict=True) for v in pair], dim=1)
                scores.append(sc.permute(0, 2, 3, 1).reshape(-1, 1))
                boxes.append(box.repeat(1, 2, 1, 1).permute(0, 2, 3, 1).reshape(-1, 4))
                kpss.append(kps.repeat(1, 2, 1, 1).permute(0, 2, 3, 1).reshape(-1, 10))
            return (*scores, *boxes, *kpss)

    return CentredSCRFD()


def _constant_genderage(gender: str, age: float):
    torch = _torch()
    male = 1.0 if gender == "male" else -1.0
    out = torch.tensor([[-male, male, float(age) / 100.0]], dtype=torch.float32)

    class ConstantGenderAge(torch.nn.Module):
        def forward(self, x):
            return x[:, :3, 0, 0] * 0.0 + out

    return ConstantGenderAge()


def _texture_arcface(identity_floor: float):
    torch = _torch()
    f = torch.nn.functional
    a, b = math.sqrt(identity_floor), math.sqrt(1.0 - identity_floor)
    pool = 112 // TEXTURE_GRID  # 7

    class TextureArcFace(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("zeros", torch.zeros(1, EMBEDDING_DIM - 1 - TEXTURE_GRID**2))

        def forward(self, x):  # x: (rgb - 127.5) / 127.5, [N, 3, 112, 112]
            grey = x.mean(dim=1, keepdim=True)
            p = f.avg_pool2d(grey, pool, pool)  # [N, 1, 16, 16]
            blocks = f.avg_pool2d(p, TEXTURE_BLOCK, TEXTURE_BLOCK)
            t = (p - f.interpolate(blocks, scale_factor=TEXTURE_BLOCK, mode="nearest")).flatten(1)
            t = t / (t.norm(dim=1, keepdim=True) + 1e-6)
            head = t[:, :1] * 0.0 + a
            tail = t[:, :1] * 0.0 + self.zeros  # a constant width keeps the output shape static
            return torch.cat([head, b * t, tail], dim=1)

    return TextureArcFace()


def controlled_embedding(faces: np.ndarray, identity_floor: float) -> np.ndarray:
    """What the controlled ``w600k_r50.onnx`` returns for aligned uint8 RGB faces ``[N, 112, 112, 3]``."""
    x = (np.asarray(faces, np.float64) - 127.5) / 127.5
    grey = x.mean(axis=-1)
    n, pool = grey.shape[0], 112 // TEXTURE_GRID
    p = grey.reshape(n, TEXTURE_GRID, pool, TEXTURE_GRID, pool).mean(axis=(2, 4))
    k = TEXTURE_GRID // TEXTURE_BLOCK
    blocks = p.reshape(n, k, TEXTURE_BLOCK, k, TEXTURE_BLOCK).mean(axis=(2, 4))
    t = (p - np.repeat(np.repeat(blocks, TEXTURE_BLOCK, axis=1), TEXTURE_BLOCK, axis=2)).reshape(n, -1)
    t = t / (np.linalg.norm(t, axis=1, keepdims=True) + 1e-6)
    out = np.zeros((n, EMBEDDING_DIM))
    out[:, 0] = math.sqrt(identity_floor)
    out[:, 1 : 1 + t.shape[1]] = math.sqrt(1.0 - identity_floor) * t
    return out


def make_controlled_face_pack(
    folder: str | Path,
    pack: str = "controlled",
    *,
    det_score: float = 0.9,
    gender: str = "male",
    age: float = 40.0,
    identity_floor: float = 0.1,
    keypoints: np.ndarray | None = None,
) -> Path:
    """Write the controlled pack under ``folder/models/<pack>/`` (``folder`` plays ``models/insightface``).

    ``det_score`` in (0, 1): the score of the one face per image; ``gender``/``age``: what the gender/age
    model says for every face; ``identity_floor`` in [0, 1): the cosine of two faces with unrelated
    textures; ``keypoints`` ``[5, 2]`` (112-template coordinates, default the ArcFace template): the five
    landmarks the detector reports for every face (see :func:`smiling_keypoints`, :func:`turned_keypoints`).
    Returns the pack folder.
    """
    if keypoints is not None:
        k = np.asarray(keypoints, np.float64)
        if k.shape != (5, 2) or not np.all(np.isfinite(k)):
            raise ValueError(f"keypoints must be 5 finite (x, y) pairs, got shape {list(k.shape)}")
    if not 0.0 < det_score < 1.0:
        raise ValueError(f"det_score must lie in (0, 1), got {det_score}")
    if gender not in ("male", "female"):
        raise ValueError(f"gender must be 'male' or 'female', got {gender!r}")
    if not 0.0 <= identity_floor < 1.0:
        raise ValueError(f"identity_floor must lie in [0, 1), got {identity_floor}")
    torch = _torch()
    d = Path(folder) / "models" / pack
    d.mkdir(parents=True, exist_ok=True)
    names = (
        [f"score_{s}" for s in (8, 16, 32)]
        + [f"bbox_{s}" for s in (8, 16, 32)]
        + [f"kps_{s}" for s in (8, 16, 32)]
    )
    export_onnx(
        _centred_detector(det_score, keypoints),
        d / "det_10g.onnx",
        torch.zeros(1, 3, 128, 128),
        "input.1",
        names,
        {"input.1": {2: "h", 3: "w"}} | {n: {0: "anchors"} for n in names},
    )
    export_onnx(
        _texture_arcface(identity_floor),
        d / "w600k_r50.onnx",
        torch.zeros(2, 3, 112, 112),
        "input.1",
        ["embedding"],
        {"input.1": {0: "None"}, "embedding": {0: "None"}},
    )
    export_onnx(
        _constant_genderage(gender, age),
        d / "genderage.onnx",
        torch.zeros(2, 3, 96, 96),
        "data",
        ["fc1"],
        {"data": {0: "None"}, "fc1": {0: "None"}},
    )
    return d


def smiling_keypoints(widen: float = 1.3, lift: float = 3.0) -> np.ndarray:
    """The ArcFace template with the mouth corners pulled apart by ``widen`` about the mouth centre and
    raised by ``lift`` (112-pixel units): what a broad smile does to five keypoints."""
    k = np.asarray(ARCFACE_TEMPLATE_112, np.float64).copy()
    c = 0.5 * (k[3] + k[4])
    for i in (3, 4):
        k[i] = c + (k[i] - c) * widen - np.array([0.0, lift])
    return k


def turned_keypoints(yaw_degrees: float, nose_depth: float = 0.45) -> np.ndarray:
    """The ArcFace template with the nose tip moved sideways as a head turned by ``yaw_degrees`` moves it
    (the weak-perspective model of ``fdta_core.faces.keypoints``)."""
    k = np.asarray(ARCFACE_TEMPLATE_112, np.float64).copy()
    iod = float(k[1, 0] - k[0, 0])
    k[2, 0] = 0.5 * (k[0, 0] + k[1, 0]) + nose_depth * iod * math.tan(math.radians(yaw_degrees))
    return k
