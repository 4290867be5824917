"""The one image codec of FDTA: decoding encoded images (JPEG, PNG, BMP, WebP) to RGB uint8, encoding
JPEG (the dataset writer) and PNG (report plots), and checking JPEG payloads.

Decoding: OpenCV (>= 4.10 decodes straight to RGB), Pillow when OpenCV is missing; both give the same
pixels for the same libjpeg-turbo settings. EXIF orientation is ignored: a record or reference file is
taken as the pixels it stores, as the writer stored them.

JPEG encoding: two backends, both libjpeg-turbo at quality 95 with 4:2:0 chroma subsampling (what OpenCV and Pillow
write by default, so files are the size insightface's tools produce):

* ``simplejpeg``: one C call per image that releases the GIL; about twice as fast per image as Pillow
  on 112x112 faces (Pillow spends most of a small encode in Python-level plugin code). Used when
  installed.
* ``pillow``: always available; also releases the GIL inside the encoder.

Both are safe to call from many threads at once, which is how the writer uses all cores.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError, InputError, check_choice

log = logging.getLogger(__name__)

JPEG_QUALITY = 95
BACKENDS = ("auto", "simplejpeg", "pillow")

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"


def _pillow_encoder(quality: int) -> Callable[[np.ndarray], bytes]:
    from PIL import Image

    def encode(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
        return buf.getvalue()

    return encode


def _simplejpeg_encoder(quality: int) -> Callable[[np.ndarray], bytes]:
    import simplejpeg

    def encode(image: np.ndarray) -> bytes:
        return simplejpeg.encode_jpeg(image, quality=quality, colorspace="RGB", colorsubsampling="420")

    return encode


def jpeg_encoder(
    backend: str = "auto", quality: int = JPEG_QUALITY
) -> tuple[str, Callable[[np.ndarray], bytes]]:
    """``(backend_name, encode)`` where ``encode(rgb_uint8_hxwx3) -> jpeg bytes``.

    ``auto`` picks simplejpeg when it is importable and Pillow otherwise.
    """
    check_choice(None, "jpeg_backend", backend, BACKENDS, what="JPEG backend")
    if not 1 <= int(quality) <= 100:
        raise InputError(f"JPEG quality must be 1..100, got {quality}", where="quality")
    if backend in ("auto", "simplejpeg"):
        try:
            return "simplejpeg", _simplejpeg_encoder(int(quality))
        except ImportError:
            if backend == "simplejpeg":
                raise InputError(
                    "the simplejpeg backend was requested but simplejpeg is not installed",
                    where="jpeg_backend",
                    fix="pip install simplejpeg, or use the 'pillow' backend.",
                ) from None
            log.debug("simplejpeg not installed; encoding JPEG with Pillow")
    return "pillow", _pillow_encoder(int(quality))


def check_jpeg(data: bytes, *, decode: bool = True, where: str = "record") -> tuple[int, int] | None:
    """Check that ``data`` is a JPEG: SOI/EOI markers always, a full decode when ``decode``.

    Returns ``(width, height)`` after a full decode (None otherwise); raises :class:`DatasetError`
    naming ``where``.
    """
    if len(data) < 4 or data[:2] != _SOI:
        raise DatasetError(f"{where}: payload is not a JPEG (no SOI marker; {len(data)} bytes)")
    # Some encoders pad after EOI; accept a few trailing bytes.
    if _EOI not in data[-16:]:
        raise DatasetError(f"{where}: JPEG has no EOI marker at its end (truncated image data)")
    if not decode:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size
    except Exception as exc:  # noqa: BLE001 - any decoder failure is corruption of this record
        raise DatasetError(f"{where}: JPEG does not decode ({type(exc).__name__}: {exc})") from None


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # opencv is a declared dependency; Pillow is the slower fallback
        return None
    return cv2


def _decode_pillow(data: bytes | memoryview, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad data
        raise DatasetError(f"{where} does not hold a decodable image ({type(exc).__name__}: {exc})") from None


def decode_image(data: bytes | memoryview, *, where: str = "image") -> np.ndarray:
    """Encoded image bytes -> H x W x 3 RGB uint8 (grey images replicated, alpha dropped).

    Raises :class:`DatasetError` naming ``where`` when the bytes do not decode.
    """
    cv2 = _cv2()
    if cv2 is None:
        return _decode_pillow(data, where)
    img = None
    if len(data):
        rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
        flags = (cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag) | cv2.IMREAD_IGNORE_ORIENTATION
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error:
            img = None
        if img is not None and rgb_flag is None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img is None:
        raise DatasetError(f"{where} does not hold a decodable image ({len(data)} bytes)")
    return img


def decode_into(
    data: bytes | memoryview, out: np.ndarray, flip: bool = False, *, where: str = "image"
) -> None:
    """Decode into ``out`` (S x S x 3 RGB uint8), resized (bilinear) if needed, mirrored if ``flip``.

    The training loader's hot path: the flip (or plain copy) into the batch is the only extra pass.
    """
    img = decode_image(data, where=where)
    size = out.shape[0]
    cv2 = _cv2()
    if cv2 is None:
        from PIL import Image

        if img.shape[:2] != (size, size):
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
        np.copyto(out, img[:, ::-1] if flip else img)
        return
    if img.shape[0] != size or img.shape[1] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    if flip:
        cv2.flip(img, 1, out)
    else:
        np.copyto(out, img)


def read_image(path: str | os.PathLike, *, where: str = "image") -> np.ndarray:
    """An image file -> H x W x 3 RGB uint8 (see :func:`decode_image`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read image {path}: {exc}") from None
    return decode_image(data, where=f"{where} {path}")


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY, backend: str = "pillow") -> bytes:
    """RGB uint8 H x W x 3 -> JPEG bytes, for one-off encodes (a loop keeps :func:`jpeg_encoder`'s function).

    Pillow by default: byte for byte what ``cv2.imencode`` writes at the same quality, so test sets and
    benchmark files match the tools they mimic; the writer chooses simplejpeg for throughput.
    """
    return jpeg_encoder(backend, quality)[1](np.ascontiguousarray(image))


def encode_png(image: np.ndarray) -> bytes:
    """RGB uint8 H x W x 3 -> PNG bytes (lossless)."""
    cv2 = _cv2()
    img = np.ascontiguousarray(image)
    if cv2 is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format="PNG")
        return buf.getvalue()
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise DatasetError("PNG encoding failed")
    return buf.tobytes()
