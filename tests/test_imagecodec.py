"""The one image codec (fdta_core.imagecodec): OpenCV and Pillow decode to the same RGB pixels, bad bytes
raise a DatasetError naming the place, EXIF orientation is ignored, one-off JPEGs are what cv2 writes."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from fdta_core import imagecodec
from fdta_core.errors import DatasetError
from fdta_core.imagecodec import decode_image, decode_into, encode_jpeg, encode_png, read_image


def _smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 4)


def _pil_bytes(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(params=["opencv", "pillow"])
def backend(request, monkeypatch):
    if request.param == "pillow":
        monkeypatch.setattr(imagecodec, "_cv2", lambda: None)
    return request.param


def test_decode_is_rgb_for_jpeg_png_grey_and_alpha(backend):
    img = _smooth(40, 52)
    png = decode_image(_pil_bytes(img, "PNG"))
    assert png.dtype == np.uint8 and png.shape == (40, 52, 3)
    np.testing.assert_array_equal(png, img)  # lossless, and RGB order (not BGR)
    rgba = np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode_image(_pil_bytes(rgba, "PNG")), img)  # alpha dropped
    grey = decode_image(_pil_bytes(img[..., 0], "PNG"))
    np.testing.assert_array_equal(grey, np.repeat(img[..., :1], 3, axis=2))
    jpg = decode_image(encode_jpeg(img))
    assert np.abs(jpg.astype(int) - img).mean() < 3


def test_opencv_and_pillow_decode_the_same_pixels(monkeypatch):
    datas = [encode_jpeg(_smooth(112, 112, s), q) for s, q in ((1, 95), (2, 75))]
    datas.append(_pil_bytes(_smooth(33, 47, 3), "JPEG", quality=90, subsampling="4:4:4"))
    by_cv2 = [decode_image(d) for d in datas]
    monkeypatch.setattr(imagecodec, "_cv2", lambda: None)
    by_pil = [decode_image(d) for d in datas]
    for a, b in zip(by_cv2, by_pil, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1


def test_bad_bytes_name_the_place(backend):
    for data in (b"", b"not an image", encode_jpeg(_smooth(16, 16))[:40]):
        with pytest.raises(DatasetError, match="rec#7"):
            decode_image(data, where="rec#7")


def test_exif_orientation_is_ignored(backend):
    img = np.zeros((40, 80, 3), np.uint8)
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90": the stored pixels stay 80 wide
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).shape == (40, 80, 3)


def test_decode_into_resizes_and_flips(backend):
    img = _smooth(112, 112)
    data = encode_png(img)
    out = np.empty((112, 112, 3), np.uint8)
    decode_into(data, out, flip=True)
    np.testing.assert_array_equal(out, img[:, ::-1])
    small = np.empty((56, 56, 3), np.uint8)
    decode_into(data, small)
    ref = cv2.resize(img, (56, 56), interpolation=cv2.INTER_LINEAR)
    assert np.abs(small.astype(int) - ref).mean() < 2  # bilinear in both backends


def test_one_off_jpeg_is_what_cv2_writes():
    img = _smooth(112, 112, 5)
    ok, ref = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok and encode_jpeg(img) == ref.tobytes()


def test_read_image_names_a_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="cannot read image"):
        read_image(tmp_path / "missing.png", where="ReferenceBank")
    p = tmp_path / "a.png"
    p.write_bytes(encode_png(_smooth(8, 9)))
    assert read_image(p).shape == (8, 9, 3)
