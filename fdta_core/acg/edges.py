"""Control images for the ACG ControlNet: real face photos turned into edge maps.

FDTA's ACG conditions SD 1.5 on Canny-like edge maps of real faces, so the face layout (pose, framing,
contour) follows a real photo while the identity comes from the prompt. Edge maps keep geometry but
drop texture and colour, which is what keeps the generated identity from copying the photographed one.

Photos are first fitted to the sampling resolution (centre crop + resize, the same framing ComfyUI's
ControlNet applies), then edges are detected at that size so line thickness does not depend on the
photo's resolution. Output follows the ControlNet convention: white edges on black, 3-channel uint8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, check_choice

#: ``none``: use the images as they are (already edge maps); ``canny``: OpenCV Canny with the given
#: thresholds; ``canny_auto``: Canny with thresholds from the image median (robust to exposure);
#: ``sobel``: soft gradient-magnitude edges (for ControlNets trained on soft edges / lineart).
EDGE_METHODS: tuple[str, ...] = ("none", "canny", "canny_auto", "sobel")


@dataclass(frozen=True)
class EdgeSettings:
    """How photos become control images.

    ``low``/``high`` are Canny's hysteresis thresholds (0-255); ``blur`` is the side of a Gaussian blur
    applied first (0 or 1: none; even values are rounded up to odd); ``sigma`` sets ``canny_auto``'s band
    around the median.
    """

    method: str = "canny"
    low: int = 100
    high: int = 200
    blur: int = 3
    sigma: float = 0.33

    def __post_init__(self) -> None:
        check_choice(None, "edge_method", self.method, EDGE_METHODS)
        if not (0 <= self.low <= 255 and 0 <= self.high <= 255) or self.low > self.high:
            raise InputError(
                f"Canny thresholds must satisfy 0 <= low <= high <= 255, got low={self.low} high={self.high}",
                where="canny_low",
            )
        if self.blur < 0:
            raise InputError(f"blur must be >= 0, got {self.blur}", where="edge_blur")


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a declared dependency
        raise InputError(
            "OpenCV is needed to turn photos into edge maps",
            where="edge_method",
            fix="pip install opencv-python-headless (or connect ready edge maps and choose 'none').",
        ) from exc
    return cv2


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop ``image`` (uint8 HxWx3) to the aspect of ``width``x``height`` and resize to it."""
    from PIL import Image

    h, w = image.shape[:2]
    target = width / height
    if w / h > target:  # too wide: crop width
        nw = max(1, round(h * target))
        x0 = (w - nw) // 2
        image = image[:, x0 : x0 + nw]
    elif w / h < target:
        nh = max(1, round(w / target))
        y0 = (h - nh) // 2
        image = image[y0 : y0 + nh]
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(
        pil.resize((width, height), Image.LANCZOS if image.shape[0] > height else Image.BICUBIC)
    )


def edge_map(image: np.ndarray, settings: EdgeSettings) -> np.ndarray:
    """One uint8 RGB image -> its edge map (uint8 HxWx3, white edges on black)."""
    if settings.method == "none":
        return np.ascontiguousarray(image)
    cv2 = _cv2()
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if settings.blur > 1:
        k = settings.blur | 1
        gray = cv2.GaussianBlur(gray, (k, k), 0)
    if settings.method == "canny":
        edges = cv2.Canny(gray, settings.low, settings.high)
    elif settings.method == "canny_auto":
        med = float(np.median(gray))
        lo = int(max(0.0, (1.0 - settings.sigma) * med))
        hi = int(min(255.0, (1.0 + settings.sigma) * med))
        edges = cv2.Canny(gray, lo, max(hi, lo + 1))
    else:  # sobel
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.sqrt(gx * gx + gy * gy)
        peak = float(mag.max())
        edges = (
            np.zeros_like(gray)
            if peak <= 0
            else np.clip(np.rint(mag * (255.0 / peak)), 0, 255).astype(np.uint8)
        )
    return np.repeat(edges[:, :, None], 3, axis=2)


def control_images(
    images: np.ndarray,
    width: int,
    height: int,
    settings: EdgeSettings,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Prepare a batch of photos (uint8 [N,H,W,3]) as control images at the sampling resolution."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise InputError(
            f"control images must be a non-empty uint8 RGB batch [N,H,W,3], got {images.dtype} {list(images.shape)}",
            where="control_images",
        )
    out = np.empty((images.shape[0], height, width, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = edge_map(fit_image(img, width, height), settings)
        if progress is not None:
            progress(i + 1, images.shape[0])
    return out
