"""The 112x112 ArcFace frame <-> SAM's 256/1024 px FFHQ frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fdta_core.age.frame import (
    ARCFACE_TEMPLATE_112,
    M_112_TO_256,
    M_256_TO_112,
    faces_to_sam_input,
    ffhq_transform,
    sam_output_to_faces,
    warp_affine,
)


@pytest.fixture(scope="module")
def alignment(shared_testdata):
    p = shared_testdata / "sam" / "arcface112_ffhq_alignment.json"
    if not p.is_file():
        pytest.skip(f"{p} not found")
    return json.loads(p.read_text())


def _apply(m, pts):
    pts = np.asarray(pts, np.float64)
    return pts @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def test_transforms_match_reference(alignment):
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112, alignment["arcface_template_112"], atol=0)
    for size, key in ((256, "arcface112_to_ffhq256"), (1024, "arcface112_to_ffhq1024")):
        ref = alignment[key]
        m = ffhq_transform(ARCFACE_TEMPLATE_112, size)
        np.testing.assert_allclose(m, ref["M"], atol=1e-9)
        np.testing.assert_allclose(
            _apply(m, ARCFACE_TEMPLATE_112), ref["template_points_in_ffhq_frame"], atol=1e-7
        )
        corners = [[-0.5, -0.5], [111.5, -0.5], [111.5, 111.5], [-0.5, 111.5]]  # outer pixel edges
        np.testing.assert_allclose(_apply(m, corners), ref["arcface_image_outline_in_ffhq_frame"], atol=1e-7)
    np.testing.assert_allclose(M_112_TO_256, alignment["arcface112_to_ffhq256"]["M"], atol=1e-9)
    np.testing.assert_allclose(M_256_TO_112, alignment["arcface112_to_ffhq256"]["M_inverse"], atol=1e-9)


def _blobs(points, size, sigma=1.5):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size), np.float64)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img


def _centroids(img, expected, radius):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float64)
    out = []
    for ex, ey in expected:
        w = img * (((xx - ex) ** 2 + (yy - ey) ** 2) < radius**2)
        out.append([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    return np.array(out)


def test_template_landmarks_land_where_the_transform_puts_them(alignment):
    """Bright dots at the five template points of a 112 face are found, after the warp, at the points the
    reference transform lists (checks the warp's pixel-centre convention, not just the matrix)."""
    dots = _blobs(ARCFACE_TEMPLATE_112, 112)
    face = np.repeat((dots / dots.max() * 255).round().astype(np.uint8)[None, ..., None], 3, axis=-1)
    x = faces_to_sam_input(torch.from_numpy(face))  # [-1, 1]
    got = ((x[0, 0].numpy() + 1) / 2) * 255
    want = np.array(alignment["arcface112_to_ffhq256"]["template_points_in_ffhq_frame"])
    np.testing.assert_allclose(_centroids(got, want, 6.0), want, atol=0.15)
    # and back: 256-frame dots at the listed points come back on the 112 template
    dots256 = _blobs(want, 256, sigma=2.5)
    back = warp_affine(torch.from_numpy(dots256)[None, None], M_256_TO_112, 112)[0, 0].numpy()
    np.testing.assert_allclose(_centroids(back, ARCFACE_TEMPLATE_112, 4.0), ARCFACE_TEMPLATE_112, atol=0.15)


def _smooth_face(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112] / 111.0
    img = np.zeros((112, 112, 3))
    for c in range(3):
        img[..., c] = 0.5 + 0.2 * np.sin(
            2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) + c
        )
        for _ in range(4):
            cx, cy, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.15)
            img[..., c] += rng.uniform(-0.2, 0.2) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s**2))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("decoder_side", [1024, 256, 64])
def test_round_trip_with_identity_decoder(decoder_side):
    faces = np.stack([_smooth_face(0), _smooth_face(1)])
    x = faces_to_sam_input(torch.from_numpy(faces))
    assert x.shape == (2, 3, 256, 256) and x.min() >= -1 and x.max() <= 1
    # an "identity decoder": the 256 px input shown at the decoder's output size
    y = (
        torch.nn.functional.interpolate(x, size=(decoder_side, decoder_side), mode="nearest")
        if decoder_side >= 256
        else torch.nn.functional.interpolate(x, size=(decoder_side, decoder_side), mode="area")
    )
    back = sam_output_to_faces(y)
    assert back.shape == (2, 112, 112, 3) and back.dtype == torch.uint8
    err = np.abs(back.numpy().astype(np.int16) - faces.astype(np.int16))
    inner = err[:, 4:-4, 4:-4]
    if decoder_side >= 256:
        assert err.mean() < 1.0 and inner.max() <= 4
    else:  # a 64 px decoder loses detail, but the geometry must still line up
        assert err.mean() < 6.0


def test_border_is_reflected_not_black():
    face = np.full((1, 112, 112, 3), 200, np.uint8)
    x = faces_to_sam_input(torch.from_numpy(face))
    assert torch.allclose(x, torch.full_like(x, 200 / 255 * 2 - 1), atol=1e-5)


def test_matches_cv2_warp():
    import cv2  # a dev dependency: the oracle must run, never skip

    face = _smooth_face(3)
    ours = ((faces_to_sam_input(torch.from_numpy(face[None]))[0].permute(1, 2, 0).numpy() + 1) / 2) * 255
    ref = cv2.warpAffine(
        face.astype(np.float32),
        M_112_TO_256,
        (256, 256),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    assert np.abs(ours - ref).max() < 0.05


def test_frame_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        faces_to_sam_input(torch.zeros(1, 128, 128, 3, dtype=torch.uint8))
