"""Adapter from FDTA_FACE_MODELS to the selection's FaceAnalyzer protocol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fdta_core.acg import ACGSettings, FaceAnalysis, FaceAnalyzer, run_acg
from fdta_core.acg.faces_adapter import FaceModelsAnalyzer, as_analyzer, main_face
from fdta_core.errors import InputError
from fdta_core.faces import load_face_pack
from fdta_core.testing import faces as testing_faces
from tests.acg_helpers import make_plan


@dataclass
class Det:
    bbox: np.ndarray
    score: float


@dataclass
class Face:  # the shape of fdta_core.faces.pack.FaceAnalysis
    detection: Det
    aligned: np.ndarray
    embedding: np.ndarray | None = None
    gender: str | None = None
    age: int | None = None


class FakeModels:
    """FaceModels-like: a face wherever the image's mean is bright; two faces, the central one larger."""

    detector = object()

    def __init__(self):
        self.thresholds = []

    def analyze(self, image, threshold=None):
        self.thresholds.append(threshold)
        if image.mean() < 100:
            return []
        v = float(image.mean())
        small = Face(
            Det(np.array([0, 0, 10, 10.0]), 0.99), np.zeros((112, 112, 3), np.uint8), np.ones(4), "female", 70
        )
        big = Face(
            Det(np.array([20, 20, 80, 80.0]), 0.7),
            np.full((112, 112, 3), 7, np.uint8),
            np.array([v, 1, 0, 0]),
            "male",
            31,
        )
        return [small, big]

    def embed(self, faces):
        return np.stack([np.array([f.mean(), 1.0, 0, 0]) for f in faces])


def test_wraps_face_models_and_picks_the_main_face():
    fm = FakeModels()
    an = as_analyzer(fm, det_threshold=0.1)
    assert isinstance(an, FaceModelsAnalyzer) and isinstance(an, FaceAnalyzer)
    imgs = np.stack([np.full((100, 100, 3), 200, np.uint8), np.zeros((100, 100, 3), np.uint8)])
    a, b = an.analyze(imgs)
    assert (a.detected, a.det_score, a.gender, a.age) == (True, 0.7, "male", 31.0)
    assert a.aligned.shape == (112, 112, 3) and a.aligned[0, 0, 0] == 7
    assert a.embedding.tolist() == [200.0, 1.0, 0.0, 0.0]
    assert b == FaceAnalysis(False)
    assert fm.thresholds == [0.1, 0.1]
    assert an.embed_aligned(np.zeros((2, 112, 112, 3), np.uint8)).shape == (2, 4)


def test_protocol_objects_pass_through_and_others_are_rejected():
    class Ready:
        def analyze(self, images):
            return []

        def embed_aligned(self, faces):
            return faces

    r = Ready()
    assert as_analyzer(r) is r
    with pytest.raises(InputError, match="face_models"):
        as_analyzer(object())
    fm = FakeModels()
    fm.detector = None
    with pytest.raises(InputError, match="no detector"):
        as_analyzer(fm)


def test_main_face_rule():
    faces = [
        Face(Det(np.array([0, 0, 30, 30.0]), 0.9), None),
        Face(Det(np.array([35, 35, 65, 65.0]), 0.8), None),
    ]
    assert main_face(faces, (100, 100, 3)) is faces[1]  # same size, the central one wins


def test_tiny_face_pack_end_to_end(tmp_path):
    """With the faces stage's tiny ONNX pack (real detector/ArcFace/gender-age code paths)."""
    testing_faces.make_tiny_face_pack(tmp_path, "tiny")
    models = load_face_pack([tmp_path], "tiny", providers="cpu")
    face_img = testing_faces.tiny_face_image(256, 256)[0]
    blank = np.zeros((256, 256, 3), np.uint8)

    def sample(jobs):  # candidate 1 of every identity shows a "face"
        return np.stack([face_img if j.candidate == 1 else blank for j in jobs])

    res = run_acg(
        make_plan(2), sample, 1, settings=ACGSettings(candidates=2, retries=0), analyzer=as_analyzer(models)
    )
    # gender/age of the random tiny model are arbitrary: only the detection path is asserted here
    for slot in range(2):
        recs = res.records_of(slot)
        assert recs[0].reasons[0].code == "no_face"
        assert recs[1].analysis.detected and recs[1].analysis.aligned.shape == (112, 112, 3)
        assert recs[1].analysis.embedding is not None and recs[1].analysis.embedding.ndim == 1
