"""Alignment of a face to the 112x112 ArcFace template (DESIGN 5.1).

A similarity transform (rotation, uniform scale, translation) is fitted to the 5 landmarks by least
squares (Umeyama's closed form) and the image is warped with it. Every FR model of the insightface
family was trained on crops made this way, so a different alignment silently lowers CSIM.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: The 5-point ArcFace template in a 112x112 crop: left eye, right eye, nose, left and right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE_112.setflags(write=False)


def template_for(size: int = 112) -> np.ndarray:
    """The ArcFace template scaled to a ``size`` x ``size`` crop (112 gives the template itself)."""
    if size <= 0:
        raise InputError(f"crop size must be positive, got {size}", where="align.size")
    return ARCFACE_TEMPLATE_112 * (float(size) / 112.0)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` points (Umeyama 1991).

    Returns the 2x3 matrix ``M`` with ``dst ~= M @ [x, y, 1]``. Reflections are excluded, as a mirrored
    face is a different face.
    """
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or s.shape[0] < 2:
        raise InputError(
            f"need two matching [K, 2] point sets with K >= 2, got {list(s.shape)} and {list(d.shape)}",
            where="estimate_similarity",
        )
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise InputError("landmarks contain NaN or infinite values", where="estimate_similarity")
    n = s.shape[0]
    mu_s, mu_d = s.mean(0), d.mean(0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc**2).sum() / n)
    if var_s < 1e-12:
        raise InputError("all landmarks coincide; cannot fit a transform", where="estimate_similarity")
    cov = dc.T @ sc / n
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    m = np.empty((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = t
    return m


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to ``[K, 2]`` points."""
    p = np.asarray(points, np.float64)
    m = np.asarray(matrix, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    m = np.asarray(matrix, np.float64)
    a_inv = np.linalg.inv(m[:, :2])
    return np.concatenate([a_inv, -a_inv @ m[:, 2:3]], axis=1)


def ensure_rgb_uint8(image: np.ndarray, *, where: str = "image") -> np.ndarray:
    """Any single image (HxW gray, HxWx1, HxWx3, HxWx4; uint8 or float in [0, 1]) -> HxWx3 uint8 RGB.

    Grayscale is repeated to three channels and alpha is dropped, so such inputs are usable rather than
    a crash in the middle of a batch.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {list(arr.shape)}",
            where=where,
            fix="pass an RGB, RGBA or grayscale image.",
        )
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InputError(f"image is only {arr.shape[1]}x{arr.shape[0]} pixels", where=where)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        if a.size and not np.isfinite(a).all():
            raise InputError("the image contains NaN or infinite values", where=where)
        if a.size and a.max() <= 1.0 + 1e-3 and a.min() >= -1e-3:
            a = a * 255.0
        arr = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def align_face(image_rgb: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image_rgb`` so the 5 landmarks land on the ArcFace template; returns ``size``x``size``x3 uint8.

    Bilinear interpolation, black outside the image (as insightface's ``norm_crop``).
    """
    import cv2

    img = ensure_rgb_uint8(image_rgb, where="align_face.image")
    lm = np.asarray(landmarks5, np.float64).reshape(-1, 2)
    if lm.shape != (5, 2):
        raise InputError(
            f"need 5 landmarks (x, y), got {list(np.asarray(landmarks5).shape)}", where="align_face"
        )
    m = estimate_similarity(lm, template_for(size))
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def crop_transform(center: tuple[float, float], out_size: int, scale: float) -> np.ndarray:
    """2x3 matrix that scales by ``scale`` about ``center`` and puts it in the middle of an ``out_size`` crop
    (the un-rotated crop insightface's gender/age model is fed)."""
    cx, cy = float(center[0]), float(center[1])
    half = out_size / 2.0
    return np.array([[scale, 0.0, half - scale * cx], [0.0, scale, half - scale * cy]], np.float64)
