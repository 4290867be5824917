"""Face models on tiny ONNX packs with the real insightface signatures: loading, detection, alignment,
embeddings, gender/age, and every kind of bad input."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from fdta_core.errors import InputError, ModelFormatError, ModelNotFoundError
from fdta_core.faces import (
    ALIGNED_FACE_BOX,
    FaceModels,
    list_packs,
    load_face_pack,
    provider_choices,
    resolve_providers,
)
from fdta_core.faces.align import ARCFACE_TEMPLATE_112, align_face, warp_points
from fdta_core.testing.faces import (
    make_tiny_face_pack,
    synthetic_identity_faces,
    tiny_face_image,
    write_tiny_arcface,
    write_tiny_genderage,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("insightface")
    make_tiny_face_pack(r, "tiny_pack")
    return r


@pytest.fixture(scope="module")
def models(root) -> FaceModels:
    return load_face_pack([root], "tiny_pack", providers="auto", det_size=256)


def _ort(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------- loading
def test_pack_signatures_match_buffalo_l(root):
    d = root / "models" / "tiny_pack"
    det = _ort(d / "det_10g.onnx")
    assert det.get_inputs()[0].shape[:2] == [1, 3] and len(det.get_outputs()) == 9
    rec = _ort(d / "w600k_r50.onnx")
    assert rec.get_inputs()[0].shape[1:] == [3, 112, 112] and rec.get_outputs()[0].shape[1] == 512
    ga = _ort(d / "genderage.onnx")
    assert ga.get_inputs()[0].shape[1:] == [3, 96, 96] and ga.get_outputs()[0].shape[1] == 3


def test_load_and_describe(models, root):
    assert models.detector and models.recognizer and models.genderage
    assert models.providers == ["CPUExecutionProvider"]
    assert "det_10g.onnx" in models.describe() and "w600k_r50.onnx" in models.describe()
    assert list_packs([root, root / "nowhere"]) == ["tiny_pack"]
    assert provider_choices()[0] == "auto" and "CPU" in provider_choices()


def test_missing_pack_names_folders_and_files(tmp_path, root):
    with pytest.raises(ModelNotFoundError) as e:
        load_face_pack([tmp_path, root], "buffalo_l")
    msg = str(e.value)
    assert str(tmp_path / "models" / "buffalo_l") in msg and str(root / "models" / "buffalo_l") in msg
    assert "det_10g.onnx" in msg and "w600k_r50.onnx" in msg


def test_incomplete_pack(tmp_path):
    d = tmp_path / "models" / "half"
    write_tiny_genderage(d / "genderage.onnx")
    with pytest.raises(ModelNotFoundError, match="incomplete.*detector, recognizer"):
        load_face_pack([tmp_path], "half")
    only_ga = load_face_pack([tmp_path], "half", require=())
    with pytest.raises(ModelNotFoundError, match="w600k_r50.onnx"):
        only_ga.embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_other_pack_names_found_by_signature(tmp_path, root):
    d = tmp_path / "models" / "antelope"
    (d).mkdir(parents=True)
    (d / "scrfd_10g_bnkps.onnx").write_bytes((root / "models/tiny_pack/det_10g.onnx").read_bytes())
    (d / "glintr100.onnx").write_bytes((root / "models/tiny_pack/w600k_r50.onnx").read_bytes())
    (d / "mystery_rec.onnx").write_bytes((root / "models/tiny_pack/w600k_r50.onnx").read_bytes())
    m = load_face_pack([tmp_path], "antelope", det_size=256)
    assert m.detector.path.name == "scrfd_10g_bnkps.onnx" and m.recognizer.path.name == "glintr100.onnx"
    assert m.genderage is None


def test_wrong_shape_models(tmp_path, root):
    d = tmp_path / "models" / "bad"
    d.mkdir(parents=True)
    (d / "det_10g.onnx").write_bytes((root / "models/tiny_pack/det_10g.onnx").read_bytes())
    write_tiny_arcface(d / "w600k_r50.onnx", size=64)
    with pytest.raises(ModelFormatError, match="N x 3 x 112 x 112"):
        load_face_pack([tmp_path], "bad")
    write_tiny_arcface(d / "w600k_r50.onnx", dim=10)
    with pytest.raises(ModelFormatError, match="embedding"):
        load_face_pack([tmp_path], "bad")
    # a recogniser where the detector should be
    write_tiny_arcface(d / "det_10g.onnx")
    write_tiny_arcface(d / "w600k_r50.onnx")
    with pytest.raises(ModelFormatError, match="6, 9, 10 or 15 outputs"):
        load_face_pack([tmp_path], "bad")
    (d / "det_10g.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelFormatError, match="cannot load"):
        load_face_pack([tmp_path], "bad")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_unavailable_provider_falls_back_to_cpu(root, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_providers("CUDA") == ["CPUExecutionProvider"]
    assert "CUDA is not usable here" in caplog.text and "CPUExecutionProvider" in caplog.text
    m = load_face_pack([root], "tiny_pack", providers="TensorRT", det_size=256)
    assert m.providers == ["CPUExecutionProvider"]
    assert m.embed(np.zeros((1, 112, 112, 3), np.uint8)).shape == (1, 512)


def test_invalid_pack_name(root):
    with pytest.raises(InputError):
        load_face_pack([root], "../etc")


# ------------------------------------------------------------------------------------- detection
def test_detect_exact_box_and_landmarks(models):
    img, bbox, kps = tiny_face_image()
    dets = models.detect(img)
    assert len(dets) == 1
    np.testing.assert_allclose(dets[0].bbox, bbox, atol=1e-3)
    np.testing.assert_allclose(dets[0].kps, kps, atol=1e-3)
    assert dets[0].score > 0.99


def test_detect_rescales_to_image_coordinates(models):
    img, bbox, kps = tiny_face_image(512, 512, (96, 64), scale=2.0)
    (d,) = models.detect(img)
    np.testing.assert_allclose(d.bbox, bbox, atol=1e-3)
    np.testing.assert_allclose(d.kps, kps, atol=1e-3)


def test_two_faces_and_no_face(models):
    img, _, _ = tiny_face_image(anchor=(64, 64))
    img2, _, _ = tiny_face_image(anchor=(192, 192))
    both = np.maximum(img, img2)
    dets = models.detect(both)
    assert sorted(tuple(np.round(d.bbox[:2])) for d in dets) == [(0.0, 0.0), (128.0, 128.0)]
    assert models.detect(np.full((300, 200, 3), 128, np.uint8)) == []


def test_aligned_face_lands_landmarks_on_template(models):
    img, _, kps = tiny_face_image()
    (fa,) = models.analyze(img)
    assert fa.aligned.shape == (112, 112, 3)
    from fdta_core.faces.align import estimate_similarity

    m = estimate_similarity(fa.detection.kps, ARCFACE_TEMPLATE_112)
    assert np.abs(warp_points(kps, m) - ARCFACE_TEMPLATE_112).max() < 1e-3
    np.testing.assert_allclose(fa.embedding, models.embed(align_face(img, kps)[None])[0], atol=1e-5)
    assert fa.gender in ("female", "male") and 0 <= fa.age <= 100


# ------------------------------------------------------------------------------------- embeddings
def test_embeddings_equal_independent_onnxruntime(models, root):
    _, faces, _ = synthetic_identity_faces(3, 3, seed=5)
    ours = models.embed(faces, batch_size=4)
    blob = (faces.astype(np.float64) / 127.5 - 1.0).transpose(0, 3, 1, 2).astype(np.float32)
    sess = _ort(root / "models/tiny_pack/w600k_r50.onnx")
    ref = sess.run(None, {sess.get_inputs()[0].name: blob})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    one = np.concatenate([models.embed(f[None], batch_size=1) for f in faces])
    np.testing.assert_allclose(one, ours, rtol=1e-4, atol=1e-4)


def test_mxnet_converted_model_is_fed_raw_pixels(tmp_path, models):
    make_tiny_face_pack(tmp_path, "mx", mxnet=True, genderage=False)
    mx = load_face_pack([tmp_path], "mx", det_size=256)
    assert (mx.recognizer.mean, mx.recognizer.std) == (0.0, 1.0)
    assert (models.recognizer.mean, models.recognizer.std) == (127.5, 127.5)
    _, faces, _ = synthetic_identity_faces(2, 2, seed=1)
    np.testing.assert_allclose(mx.embed(faces), models.embed(faces), rtol=1e-4, atol=1e-4)


def test_embed_rejects_unaligned(models):
    with pytest.raises(InputError, match="aligned faces"):
        models.embed(np.zeros((2, 100, 100, 3), np.uint8))
    assert models.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 512)


def test_gender_age_equals_independent(models, root):
    img, bbox, _ = tiny_face_image()
    dets = models.detect(img)
    genders, ages = models.gender_age(img, dets)
    # independent: centre crop of 1.5 x the box, scaled to 96, (x - 127.5) / 128
    x1, y1, x2, y2 = bbox
    s = 96 / (max(x2 - x1, y2 - y1) * 1.5)
    m = np.array([[s, 0, 48 - s * (x1 + x2) / 2], [0, s, 48 - s * (y1 + y2) / 2]])
    crop = cv2.warpAffine(img, m, (96, 96))
    sess = _ort(root / "models/tiny_pack/genderage.onnx")
    p = sess.run(None, {"data": ((crop.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]})[0][0]
    assert genders == ["male" if p[1] > p[0] else "female"]
    assert ages == [int(round(p[2] * 100))]
    _, faces, _ = synthetic_identity_faces(2, 2)
    g2, a2 = models.gender_age_aligned(faces)
    assert len(g2) == 4 and all(0 <= a <= 100 for a in a2)
    assert ALIGNED_FACE_BOX[2] - ALIGNED_FACE_BOX[0] == 80


# ------------------------------------------------------------------------------------- batches
def test_align_batch_reports_and_goes_on(models):
    face, _, kps = tiny_face_image()
    big, _, _ = tiny_face_image(512, 512, (96, 64), scale=2.0)
    gray = face[..., 0]  # grayscale input
    rgba = np.concatenate([face, np.full((*face.shape[:2], 1), 255, np.uint8)], axis=-1)
    aligned = np.full((112, 112, 3), 9, np.uint8)
    images = [
        face,
        np.zeros((300, 300, 3), np.uint8),
        gray,
        rgba,
        big,
        aligned,
        np.zeros((3, 3, 2)),
        face.astype(np.float32) / 255,
    ]
    calls = []
    res = models.align_batch(images, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (8, 8) and len(calls) == 8
    assert res.source_index.tolist() == [0, 2, 3, 4, 5, 7]
    assert [d.index for d in res.dropped] == [1, 6]
    assert "no face" in res.dropped[0].reason and "HxW" in res.dropped[1].reason
    np.testing.assert_array_equal(res.faces[0], align_face(face, kps))
    np.testing.assert_array_equal(res.faces[1], res.faces[0])  # gray face: same geometry
    assert res.detections[4] is None and (res.faces[4] == 9).all()
    fs = res.to_faceset()
    assert len(fs) == 6 and fs.labels.tolist() == [0, 2, 3, 4, 5, 7] and len(fs.sources) == 6
    assert fs.provenance[0].extra["det_score"] > 0.99 and fs.provenance[0].history == ["align"]
    assert "dropped 2" in res.report() and "image 1" in res.report()
    fs2 = res.to_faceset(labels=[0, 0, 0, 1, 1, 1, 2, 2])
    assert fs2.labels.tolist() == [0, 0, 1, 1, 1, 2] and len(fs2.sources) == 3


def test_align_batch_too_small_and_progress_raises(models):
    face, _, _ = tiny_face_image()
    res = models.align_batch([face], min_face_size=200)
    assert len(res.faces) == 0 and "too small" in res.dropped[0].reason
    assert len(res.to_faceset()) == 0

    class Stop(Exception):
        pass

    def progress(done, total):
        raise Stop

    with pytest.raises(Stop):
        models.align_batch([face, face], progress=progress)


def _independent_scrfd(sess, img, det, thr=0.5, nms=0.4):
    """insightface's SCRFD post-processing written out with plain loops (det canvas = image size)."""
    blob = ((img.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
    outs = [o.reshape(o.shape[-2], o.shape[-1]) for o in sess.run(None, {"input.1": blob})]
    cands = []
    for si, s in enumerate((8, 16, 32)):
        h, w = det // s, det // s
        k = 0
        for y in range(h):
            for x in range(w):
                for _a in range(2):
                    sc = float(outs[si][k, 0])
                    if sc >= thr:
                        d = outs[3 + si][k] * s
                        kp = outs[6 + si][k] * s
                        box = [x * s - d[0], y * s - d[1], x * s + d[2], y * s + d[3]]
                        pts = [[x * s + kp[2 * j], y * s + kp[2 * j + 1]] for j in range(5)]
                        cands.append((sc, box, pts))
                    k += 1
    cands.sort(key=lambda c: -c[0])
    kept = []
    for c in cands:
        ok = True
        for o in kept:
            ix = max(0.0, min(c[1][2], o[1][2]) - max(c[1][0], o[1][0]) + 1)
            iy = max(0.0, min(c[1][3], o[1][3]) - max(c[1][1], o[1][1]) + 1)
            a1 = (c[1][2] - c[1][0] + 1) * (c[1][3] - c[1][1] + 1)
            a2 = (o[1][2] - o[1][0] + 1) * (o[1][3] - o[1][1] + 1)
            if ix * iy / (a1 + a2 - ix * iy) > nms:
                ok = False
                break
        if ok:
            kept.append(c)
    return kept


@pytest.mark.parametrize("batched", [False, True])
def test_scrfd_decode_and_nms_equal_independent(tmp_path, root, batched):
    from fdta_core.testing.faces import write_random_detector

    d = tmp_path / "models" / "rnd"
    write_random_detector(d / "det_10g.onnx", seed=3, batched=batched)
    (d / "w600k_r50.onnx").write_bytes((root / "models/tiny_pack/w600k_r50.onnx").read_bytes())
    m = load_face_pack([tmp_path], "rnd", det_size=128)
    img = np.random.default_rng(0).integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    ours = m.detect(img)
    ref = _independent_scrfd(_ort(d / "det_10g.onnx"), img, 128)
    assert len(ours) == len(ref) > 3
    for o, (sc, box, pts) in zip(ours, ref, strict=True):
        assert o.score == pytest.approx(sc, abs=1e-6)
        np.testing.assert_allclose(o.bbox, box, atol=1e-3)
        np.testing.assert_allclose(o.kps, pts, atol=1e-3)
