"""The one "main face" rule (faces.detector.main_face_index), used by the pack's align_batch and by the
ACG adapter: insightface's choice with the image centre at (w // 2, h // 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fdta_core.acg.faces_adapter import main_face
from fdta_core.errors import InputError
from fdta_core.faces import Detection, main_face_index, pick_main_face


def _det(x1: float, y1: float, x2: float, y2: float) -> Detection:
    return Detection(np.array([x1, y1, x2, y2], np.float32), 0.9, np.zeros((5, 2), np.float32))


def test_large_beats_small_and_central_beats_off_centre():
    shape = (100, 100, 3)
    assert main_face_index([[0, 0, 10, 10], [20, 20, 80, 80]], shape) == 1
    assert main_face_index([[0, 0, 30, 30], [35, 35, 65, 65]], shape) == 1


def test_image_centre_is_integer_division_like_insightface():
    """Odd width 101: the centre is x = 50 (insightface's ``img.shape[1] // 2``), not 50.5. Box A is
    centred at 49.9 and box B at 51; with w // 2 A is nearer (0.1 vs 1.0), with w / 2 B would be."""
    shape = (100, 101, 3)
    a, b = [39.9, 40, 59.9, 60], [41, 40, 61, 60]
    assert main_face_index([a, b], shape) == 0
    assert main_face_index([b, a], shape) == 1


def test_first_face_wins_a_tie_and_empty_is_an_error():
    shape = (100, 100, 3)
    assert main_face_index([[10, 10, 30, 30], [70, 70, 90, 90]], shape) == 0
    with pytest.raises(InputError):
        main_face_index([], shape)


@dataclass
class _Face:
    detection: Detection


def test_pack_and_acg_adapter_pick_the_same_face():
    shape = (100, 101, 3)
    dets = [_det(41, 40, 61, 60), _det(39.9, 40, 59.9, 60), _det(0, 0, 15, 15)]
    assert pick_main_face(dets, shape) is dets[1]
    faces = [_Face(d) for d in dets]
    assert main_face(faces, shape) is faces[1]
