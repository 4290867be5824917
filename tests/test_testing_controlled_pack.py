"""The controlled face pack (fdta_core.testing.controlled) that the live end-to-end tests rely on: it
loads through the real pack loader, and its detector, gender/age model and recogniser do exactly what it
promises, so a live test can predict what face selection and the CSIM filter decide."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fdta_core.acg.faces_adapter import as_analyzer
from fdta_core.acg.selection import SelectionCriteria, choose
from fdta_core.faces import load_face_pack
from fdta_core.faces.csim import cosine_matrix
from fdta_core.faces.identity import IdentityIndex as EmbeddingBank
from fdta_core.testing.controlled import controlled_embedding, make_controlled_face_pack


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("insightface")
    make_controlled_face_pack(r, "male45", gender="male", age=45, det_score=0.8, identity_floor=0.0)
    make_controlled_face_pack(r, "female30", gender="female", age=30, identity_floor=0.6)
    return r


@pytest.mark.parametrize("det_size", [640, 256])
@pytest.mark.parametrize("side", [64, 112, 96])
def test_one_centred_face_covering_the_image(root, side, det_size):
    m = load_face_pack([root], "male45", providers="CPU", det_size=det_size)
    img = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    faces = m.analyze(img, 0.05)
    assert len(faces) == 1
    f = faces[0]
    assert f.detection.score == pytest.approx(0.8, abs=1e-4)
    np.testing.assert_allclose(f.detection.bbox, [0, 0, side, side], atol=0.5)
    assert (f.gender, f.age) == ("male", 45)
    # alignment is a plain resize of the whole image (within interpolation differences)
    smooth = cv2.resize(cv2.GaussianBlur(img, (0, 0), 3), (side, side))
    got = m.analyze(smooth, 0.05)[0].aligned.astype(float)
    want = cv2.resize(smooth, (112, 112), interpolation=cv2.INTER_LINEAR).astype(float)
    assert np.abs(got - want).mean() < 4.0


def test_recogniser_is_the_documented_function(root):
    m = load_face_pack([root], "male45", providers="CPU")
    faces = np.random.default_rng(1).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    # float32 graph vs float64 numpy
    np.testing.assert_allclose(m.embed(faces), controlled_embedding(faces, 0.0), atol=1e-4)
    sims = cosine_matrix(m.embed(faces), m.embed(faces))
    off = sims[~np.eye(6, dtype=bool)]
    # unrelated textures sit near the floor; a face with itself is 1
    assert np.all(np.abs(off) < 0.25) and np.allclose(np.diag(sims), 1.0, atol=1e-5)
    # brightness and contrast do not change the texture direction
    brighter = np.clip(faces.astype(int) // 2 + 60, 0, 255).astype(np.uint8)
    assert np.all(np.diag(cosine_matrix(m.embed(faces), m.embed(brighter))) > 0.99)


def test_selection_decisions_are_known_in_advance(root):
    """What the live tests rely on: constant gender/age reject by plan; a high identity floor makes every
    later identity a duplicate; a low one keeps unrelated faces unique."""
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    crit = SelectionCriteria(age_tolerance=10.0, uniqueness_threshold=0.3)
    male = as_analyzer(load_face_pack([root], "male45", providers="CPU"))
    female = as_analyzer(load_face_pack([root], "female30", providers="CPU"))

    an = male.analyze(imgs[:2])
    real, acc = EmbeddingBank(), EmbeddingBank()
    assert choose(an, gender="male", age=50, criteria=crit, accepted=acc, real=real)[0] == 0
    _, why = choose(an, gender="female", age=70, criteria=crit, accepted=acc, real=real)
    assert [[r.code for r in w] for w in why] == [["gender", "age"]] * 2
    acc.add("identity 0", an[0].embedding)
    later = male.analyze(imgs[2:])
    pick, why = choose(later, gender="male", age=40, criteria=crit, accepted=acc, real=real)
    # floor 0: unrelated faces stay unique; both pass and the one farther from identity 0 is kept
    sims = [float(cosine_matrix(a.embedding[None], an[0].embedding[None])[0, 0]) for a in later]
    assert max(sims) < 0.3 and pick == int(np.argmin(sims))
    assert [r.code for r in why[1 - pick]] == ["not_chosen"]

    an = female.analyze(imgs)
    acc = EmbeddingBank()
    acc.add("identity 0", an[0].embedding)
    pick, why = choose(an[1:], gender="female", age=35, criteria=crit, accepted=acc, real=real)
    assert pick is None and all([r.code for r in w] == ["duplicate"] for w in why)


def test_keypoints_are_what_the_test_sets(tmp_path):
    """A pack made with smiling / turned keypoints reports them for every face, so the expression and
    pose checks of selection read what the test decided."""
    from fdta_core.faces.keypoints import keypoint_geometry
    from fdta_core.testing.controlled import smiling_keypoints, turned_keypoints

    make_controlled_face_pack(tmp_path, "smile", keypoints=smiling_keypoints())
    make_controlled_face_pack(tmp_path, "turned", keypoints=turned_keypoints(35))
    img = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    smile = load_face_pack([tmp_path], "smile", providers="CPU").analyze(img, 0.05)[0]
    np.testing.assert_allclose(smile.detection.kps, smiling_keypoints() * 96 / 112, atol=0.3)
    g = keypoint_geometry(smile.detection.kps)
    assert g.mouth_ratio > 1.0 and abs(g.yaw) < 1
    turned = load_face_pack([tmp_path], "turned", providers="CPU").analyze(img, 0.05)[0]
    assert keypoint_geometry(turned.detection.kps).yaw == pytest.approx(35, abs=1.0)
    analyzer = as_analyzer(load_face_pack([tmp_path], "turned", providers="CPU"))
    a = analyzer.analyze(img[None])[0]
    pick, reasons = choose(
        [a],
        gender=None,
        age=None,
        criteria=SelectionCriteria(),
        accepted=EmbeddingBank(),
        real=EmbeddingBank(),
    )
    assert pick is None and [r.code for r in reasons[0]] == ["pose"]
    with pytest.raises(ValueError, match="keypoints"):
        make_controlled_face_pack(tmp_path, "bad", keypoints=np.zeros((4, 2)))
