"""JPEG encoding and checking for the dataset writer.

Two backends, both libjpeg-turbo at quality 95 with 4:2:0 chroma subsampling (what OpenCV and Pillow
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
from collections.abc import Callable

import numpy as np

from ..errors import DatasetError, InputError, check_choice

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


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> RGB uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
