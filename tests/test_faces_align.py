"""Alignment to the ArcFace template: exact on synthetic landmarks, equal to an independent solve."""

from __future__ import annotations

import numpy as np
import pytest

from fdta_core.errors import InputError
from fdta_core.faces.align import (
    ARCFACE_TEMPLATE_112,
    align_face,
    crop_transform,
    ensure_rgb_uint8,
    estimate_similarity,
    invert_affine,
    template_for,
    warp_points,
)


def _random_similarity(rng) -> np.ndarray:
    ang = rng.uniform(-np.pi, np.pi)
    s = rng.uniform(0.3, 4.0)
    t = rng.uniform(-300, 300, size=2)
    return np.array([[s * np.cos(ang), -s * np.sin(ang), t[0]], [s * np.sin(ang), s * np.cos(ang), t[1]]])


def test_template_is_the_design_values():
    assert ARCFACE_TEMPLATE_112.shape == (5, 2)
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112[0], [38.2946, 51.6963])
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112[4], [70.7299, 92.2041])
    np.testing.assert_allclose(template_for(224), ARCFACE_TEMPLATE_112 * 2)


@pytest.mark.parametrize("trial", range(20))
def test_landmarks_warp_onto_template_within_1e3_px(rng, trial):
    rng = np.random.default_rng(trial)
    t = _random_similarity(rng)
    landmarks = warp_points(ARCFACE_TEMPLATE_112, invert_affine(t))  # where the face sits in the photo
    m = estimate_similarity(landmarks, ARCFACE_TEMPLATE_112)
    assert np.abs(warp_points(landmarks, m) - ARCFACE_TEMPLATE_112).max() < 1e-3
    np.testing.assert_allclose(m, t, atol=1e-6)


def _independent_similarity(src, dst):
    # Linear least squares in (a, b, tx, ty) with M = [[a, -b, tx], [b, a, ty]].
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, -y, 1, 0])
        rhs.append(u)
        rows.append([y, x, 0, 1])
        rhs.append(v)
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_noisy_landmarks_match_independent_least_squares(rng):
    for _ in range(10):
        t = _random_similarity(rng)
        lm = warp_points(ARCFACE_TEMPLATE_112, invert_affine(t)) + rng.normal(0, 2.0, size=(5, 2))
        np.testing.assert_allclose(
            estimate_similarity(lm, ARCFACE_TEMPLATE_112),
            _independent_similarity(lm, ARCFACE_TEMPLATE_112),
            atol=1e-8,
        )


def test_align_face_moves_pixels_to_template():
    # Dots at the landmarks of a rotated, scaled face in a 300x260 photo end up at the template.
    t = np.array(
        [[np.cos(0.4) * 0.5, -np.sin(0.4) * 0.5, 10.0], [np.sin(0.4) * 0.5, np.cos(0.4) * 0.5, -30.0]]
    )
    lm = warp_points(ARCFACE_TEMPLATE_112, invert_affine(t))
    img = np.zeros((260, 300, 3), np.uint8)
    for k, (x, y) in enumerate(lm):
        xi, yi = int(round(x)), int(round(y))
        img[yi - 6 : yi + 7, xi - 6 : xi + 7] = (50 * (k + 1), 255, 0)
    out = align_face(img, lm)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    for k, (x, y) in enumerate(ARCFACE_TEMPLATE_112):
        xi, yi = int(round(x)), int(round(y))
        patch = out[yi - 1 : yi + 2, xi - 1 : xi + 2]
        assert patch[..., 1].min() > 200, f"landmark {k} not at the template"
        assert abs(int(patch[1, 1, 0]) - 50 * (k + 1)) <= 30


def test_align_face_other_sizes_and_channels():
    img = np.full((200, 200), 7, np.uint8)  # grayscale
    lm = ARCFACE_TEMPLATE_112 + 40
    assert align_face(img, lm).shape == (112, 112, 3)
    assert align_face(np.zeros((200, 200, 4), np.uint8), lm, size=224).shape == (224, 224, 3)


def test_rejects_degenerate_landmarks():
    with pytest.raises(InputError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(InputError, match="5 landmarks"):
        align_face(np.zeros((50, 50, 3), np.uint8), np.zeros((4, 2)))
    with pytest.raises(InputError, match="NaN"):
        estimate_similarity(np.full((5, 2), np.nan), ARCFACE_TEMPLATE_112)


def test_ensure_rgb_uint8_variants():
    assert ensure_rgb_uint8(np.zeros((5, 6))).shape == (5, 6, 3)
    assert ensure_rgb_uint8(np.zeros((5, 6, 1), np.uint8)).shape == (5, 6, 3)
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 9
    rgba[..., 3] = 200
    out = ensure_rgb_uint8(rgba)
    assert out.shape == (5, 6, 3) and out[0, 0, 0] == 9
    f = ensure_rgb_uint8(np.full((4, 4, 3), 1.0, np.float32))
    assert f.dtype == np.uint8 and f.max() == 255
    with pytest.raises(InputError, match="HxW"):
        ensure_rgb_uint8(np.zeros((4, 4, 2)))


def test_crop_transform_centres_the_point():
    m = crop_transform((100.0, 50.0), 96, 0.5)
    np.testing.assert_allclose(warp_points(np.array([[100.0, 50.0]]), m), [[48.0, 48.0]])
