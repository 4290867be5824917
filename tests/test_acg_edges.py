"""Control images: photos fitted to the sampling size and turned into edge maps."""

from __future__ import annotations

import numpy as np
import pytest

from fdta_core.acg import EdgeSettings, control_images, edge_map, fit_image
from fdta_core.errors import InputError


def square_photo(h=96, w=128):
    img = np.full((h, w, 3), 30, np.uint8)
    img[24:72, 40:88] = 220  # a bright square in the middle
    return img


def test_canny_finds_the_square_outline_only():
    e = edge_map(square_photo(), EdgeSettings("canny", 50, 150, blur=0))
    assert e.shape == (96, 128, 3) and e.dtype == np.uint8
    assert set(np.unique(e)) <= {0, 255}
    assert (e[..., 0] == e[..., 1]).all()
    on = e[..., 0] > 0
    assert on[24:72, 38:42].any() and on[22:26, 40:88].any()  # borders found
    assert not on[30:66, 46:82].any()  # flat inside
    assert not on[:16].any()  # flat outside


def test_thresholds_change_the_result_and_auto_adapts():
    rng = np.random.default_rng(0)
    noisy = np.clip(square_photo().astype(int) + rng.normal(0, 25, (96, 128, 3)), 0, 255).astype(np.uint8)
    low = edge_map(noisy, EdgeSettings("canny", 10, 30, blur=0))
    high = edge_map(noisy, EdgeSettings("canny", 150, 250, blur=0))
    assert (low > 0).sum() > (high > 0).sum()
    auto = edge_map(noisy, EdgeSettings("canny_auto", blur=5))
    assert 0 < (auto > 0).sum() < (low > 0).sum()


def test_sobel_and_none():
    s = edge_map(square_photo(), EdgeSettings("sobel", blur=0))
    assert s.max() == 255 and len(np.unique(s)) > 2
    img = square_photo()
    assert np.array_equal(edge_map(img, EdgeSettings("none")), img)


def test_fit_image_centre_crops_to_the_aspect():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255  # the centre square
    out = fit_image(img, 64, 64)
    assert out.shape == (64, 64, 3)
    assert out.min() == 255
    tall = fit_image(np.zeros((300, 100, 3), np.uint8), 32, 64)
    assert tall.shape == (64, 32, 3)


def test_control_images_batch_and_progress():
    seen = []
    out = control_images(
        np.stack([square_photo()] * 3), 64, 48, EdgeSettings(), progress=lambda d, t: seen.append(d)
    )
    assert out.shape == (3, 48, 64, 3)
    assert seen == [1, 2, 3]
    with pytest.raises(InputError):
        control_images(np.zeros((0, 8, 8, 3), np.uint8), 8, 8, EdgeSettings())


def test_settings_validate():
    with pytest.raises(InputError):
        EdgeSettings("laplace")
    with pytest.raises(InputError):
        EdgeSettings("canny", 200, 100)
