"""The frame change between 112x112 ArcFace-aligned faces and SAM's FFHQ-aligned frame.

SAM was trained on FFHQ-aligned faces at 256 px. Applying the FFHQ crop recipe to the five points of
the ArcFace template gives one fixed similarity transform, so an aligned 112 face can be warped into
SAM's frame without detecting landmarks again. The FFHQ crop is larger than the ArcFace crop (about
-17.7..129.6 px of the 112 frame), so the border is filled by reflection, as the FFHQ recipe itself pads
(black borders are out of distribution for SAM).

Warps run in torch (``grid_sample``), batched on the model's device. Pixel convention: integer
coordinates are pixel centres (as ``cv2.warpAffine``); reflection is about the outermost pixel centres
(``cv2.BORDER_REFLECT_101``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: The insightface ArcFace 112x112 template (left eye, right eye, nose, left mouth, right mouth).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
#: SAM's input side.
SAM_FRAME = 256
FACE_SIZE = 112


def ffhq_transform(points5: Sequence[Sequence[float]] | np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity matrix (``dst = M @ [x, y, 1]``) from an image with these five landmarks to the
    FFHQ-aligned frame of side ``size`` (the FFHQ crop recipe, with the eye points as eye centres and
    the mouth corners as dlib points 48/54)."""
    p = np.asarray(points5, np.float64)
    eye_l, eye_r, mouth_l, mouth_r = p[0], p[1], p[3], p[4]
    eye_avg = (eye_l + eye_r) / 2
    e2e = eye_r - eye_l
    e2m = (mouth_l + mouth_r) / 2 - eye_avg
    x = e2e - np.array([-e2m[1], e2m[0]])
    x = x / np.hypot(*x)
    h = max(np.hypot(*e2e) * 2.0, np.hypot(*e2m) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + e2m * 0.1
    s = size / (2.0 * h)
    rot = np.stack([x, y]) * s
    t = -rot @ c + size / 2.0 - 0.5
    return np.concatenate([rot, t[:, None]], axis=1)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


#: ArcFace 112 frame -> SAM's 256 px FFHQ frame, and back.
M_112_TO_256 = ffhq_transform(ARCFACE_TEMPLATE_112, SAM_FRAME)
M_256_TO_112 = invert_affine(M_112_TO_256)


def warp_affine(
    images: torch.Tensor, m: np.ndarray, out_size: int, border: str = "reflection"
) -> torch.Tensor:
    """Bilinear affine warp of ``[B,C,H,W]`` float images: ``out[dst] = in[M^-1 dst]`` (like
    ``cv2.warpAffine(img, M, (out, out))``), border ``"reflection"`` (REFLECT_101) or ``"zeros"``."""
    b, _, h, w = images.shape
    inv = torch.as_tensor(invert_affine(m), dtype=torch.float64)
    ys, xs = torch.meshgrid(
        torch.arange(out_size, dtype=torch.float64),
        torch.arange(out_size, dtype=torch.float64),
        indexing="ij",
    )
    src_x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    src_y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    # align_corners=True: -1 and +1 are the centres of the outermost pixels.
    grid = torch.stack([src_x * 2.0 / (w - 1) - 1.0, src_y * 2.0 / (h - 1) - 1.0], dim=-1)
    grid = grid.to(device=images.device, dtype=images.dtype)[None].expand(b, -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=border, align_corners=True)


def faces_to_sam_input(faces: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Aligned 112x112 RGB uint8 faces ``[B,112,112,3]`` -> SAM's normalised input ``[B,3,256,256]`` in [-1,1]."""
    if faces.ndim != 4 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise ValueError(f"expected aligned faces [B,112,112,3], got {list(faces.shape)}")
    x = faces.permute(0, 3, 1, 2).to(torch.float32).div(255.0).mul(2.0).sub(1.0)
    return warp_affine(x, M_112_TO_256, SAM_FRAME, border="reflection").to(dtype)


def to_sam_frame_256(images: torch.Tensor) -> torch.Tensor:
    """Bring SAM's output ``[B,3,S,S]`` to the 256 px frame: an exact mean-pool when S is a multiple of
    256 (warping straight from 1024 would alias), a bilinear resize otherwise (tiny test models)."""
    s = images.shape[-1]
    if s == SAM_FRAME:
        return images
    if s > SAM_FRAME and s % SAM_FRAME == 0:
        return F.avg_pool2d(images, s // SAM_FRAME)
    return F.interpolate(images, size=(SAM_FRAME, SAM_FRAME), mode="bilinear", align_corners=False)


def sam_output_to_faces(images: torch.Tensor) -> torch.Tensor:
    """SAM output ``[B,3,S,S]`` (nominally [-1,1]) -> aligned 112x112 RGB uint8 faces ``[B,112,112,3]`` (CPU)."""
    x = to_sam_frame_256(images.to(torch.float32))
    x = warp_affine(x, M_256_TO_112, FACE_SIZE, border="reflection")
    x = ((x + 1.0) / 2.0).clamp_(0.0, 1.0).mul_(255.0).round_()
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()
