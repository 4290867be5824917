from __future__ import annotations

import numpy as np
import pytest
import torch

from fdta_core.errors import InputError
from fdta_core.faceset import (
    FaceSet,
    Provenance,
    faceset_from_image,
    faceset_to_image,
    image_to_uint8,
    uint8_to_image,
)


def _faces(rng, n):
    return rng.integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def test_image_round_trip_is_exact(rng):
    faces = _faces(rng, 5)
    img = uint8_to_image(faces)
    assert img.dtype == torch.float32 and tuple(img.shape) == (5, 112, 112, 3)
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    np.testing.assert_array_equal(image_to_uint8(img), faces)


def test_grayscale_and_rgba_are_converted(rng):
    gray = torch.rand(2, 112, 112, 1)
    rgba = torch.rand(2, 112, 112, 4)
    assert image_to_uint8(gray).shape == (2, 112, 112, 3)
    np.testing.assert_array_equal(image_to_uint8(rgba), image_to_uint8(rgba[..., :3]))


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.rand(2, 112, 112, 2), "channels"),
        (torch.rand(112, 112), "IMAGE batch"),
        (torch.rand(1, 112, 112, 3) * 255, r"\[0, 1\]"),
        (torch.full((1, 112, 112, 3), float("nan")), "NaN"),
    ],
)
def test_bad_images_are_refused_with_a_clear_message(bad, match):
    with pytest.raises(InputError, match=match):
        image_to_uint8(bad, where="FDTAAlignFaces.image")


def test_faceset_validation(rng):
    faces = _faces(rng, 3)
    prov = [Provenance(identity=i) for i in (0, 0, 1)]
    fs = FaceSet(faces, np.array([0, 0, 1]), prov)
    assert len(fs) == 3 and fs.identities == [0, 1]
    with pytest.raises(InputError, match="shape"):
        FaceSet(faces[:, :100], np.array([0, 0, 1]), prov)
    with pytest.raises(InputError, match="uint8"):
        FaceSet(faces.astype(np.float32), np.array([0, 0, 1]), prov)
    with pytest.raises(InputError, match="one provenance"):
        FaceSet(faces, np.array([0, 0, 1]), prov[:2])
    with pytest.raises(InputError, match="disagrees"):
        FaceSet(faces, np.array([0, 1, 1]), prov)
    with pytest.raises(InputError, match=">= 0"):
        FaceSet(faces, np.array([0, 0, -1]), [Provenance(0), Provenance(0), Provenance(-1)])


def test_select_concat_and_sources(rng):
    src = FaceSet.from_sources(_faces(rng, 3), [Provenance(identity=i) for i in (10, 11, 12)], stage="acg")
    assert sorted(src.sources) == [10, 11, 12]
    assert all(p.history == ["acg"] for p in src.provenance)
    styled = FaceSet(
        _faces(rng, 4),
        np.array([10, 10, 12, 12]),
        [src.provenance[0].derive("stg", reference_key="r1", seeds={"stg": 5})] * 2
        + [src.provenance[2].derive("stg")] * 2,
        {10: src.sources[10], 12: src.sources[12]},
    )
    assert styled.provenance[0].history == ["acg", "stg"] and styled.provenance[0].seeds == {"stg": 5}
    part = styled.select(np.array([False, True, True, False]))
    assert len(part) == 2 and sorted(part.sources) == [10, 12]
    only12 = styled.select([2, 3])
    assert list(only12.sources) == [12]
    both = FaceSet.concat([part, only12])
    assert len(both) == 4
    np.testing.assert_array_equal(both.source_of(10), src.images[0])
    with pytest.raises(InputError, match="no source face"):
        both.source_of(11)
    grouped = FaceSet.concat([styled.select([2]), styled.select([0])]).sorted_by_identity()
    assert grouped.labels.tolist() == [10, 12]


def test_from_image_and_to_image(rng):
    faces = _faces(rng, 2)
    fs = faceset_from_image(uint8_to_image(faces))
    assert fs.labels.tolist() == [0, 1] and sorted(fs.sources) == [0, 1]
    np.testing.assert_array_equal(image_to_uint8(faceset_to_image(fs)), faces)
    assert tuple(faceset_to_image(FaceSet.empty()).shape) == (1, 112, 112, 3)
    with pytest.raises(InputError, match="not aligned"):
        faceset_from_image(torch.rand(1, 64, 64, 3))


def test_npz_round_trip_without_pickle(tmp_path, rng):
    fs = FaceSet.from_sources(
        _faces(rng, 2), [Provenance(identity=3, attributes={"gender": "female"}), Provenance(4)]
    )
    path = tmp_path / "fs.npz"
    fs.save_npz(str(path))
    back = FaceSet.load_npz(str(path))
    np.testing.assert_array_equal(back.images, fs.images)
    assert back.provenance == fs.provenance
    np.testing.assert_array_equal(back.sources[4], fs.sources[4])


def test_preview_is_bounded_and_shows_the_faces(rng):
    """A node preview is a sample sheet whose size does not grow with the faceset (ComfyUI keeps every
    node output in its cache, so a whole-batch float preview would grow with the chunk)."""
    from fdta_core.faceset import PREVIEW_IDENTITIES, PREVIEW_PER_IDENTITY, faceset_preview

    def make(n_ids, per):
        labels = np.repeat(np.arange(n_ids), per)
        prov = [Provenance(identity=int(i), age_target=30.0 + k % per) for k, i in enumerate(labels)]
        return FaceSet(_faces(rng, len(labels)), labels, prov)

    small, large = make(2, 3), make(40, 20)
    s, big = faceset_preview(small), faceset_preview(large)
    assert s.dtype == np.uint8 and s.shape == (4 + 2 * 130, 4 + 72 + 3 * 116, 3)
    assert big.shape == (4 + PREVIEW_IDENTITIES * 130, 4 + 72 + PREVIEW_PER_IDENTITY * 116, 3)
    assert faceset_preview(make(400, 50)).shape == big.shape
    np.testing.assert_array_equal(s[4 : 4 + 112, 76 : 76 + 112], small.images[0])  # row 0: identity 0's faces
    np.testing.assert_array_equal(s[134 : 134 + 112, 76 + 116 : 76 + 116 + 112], small.images[4])
    empty = faceset_preview(FaceSet.empty())
    assert empty.ndim == 3 and empty.shape[0] < 200


def test_provenance_derive_copies_merges_and_refuses_unknown_fields():
    """derive() builds the copy directly (it runs once per image per stage): the original is untouched,
    seeds/extra merge, history grows, scalar fields change, an unknown field is an error."""
    p = Provenance(
        identity=1, attributes={"gender": "male"}, seeds={"acg": 1}, extra={"x": 1}, history=["acg"]
    )
    q = p.derive("csim", csim=0.5, seeds={"stg": 2}, extra={"y": 2})
    assert q == Provenance(identity=1, attributes={"gender": "male"}, seeds={"acg": 1, "stg": 2},
                           csim=0.5, history=["acg", "csim"], extra={"x": 1, "y": 2})  # fmt: skip
    assert p == Provenance(identity=1, attributes={"gender": "male"}, seeds={"acg": 1}, extra={"x": 1},
                           history=["acg"])  # fmt: skip
    q.attributes["gender"] = "female"
    q.seeds["acg"] = 9
    assert p.attributes == {"gender": "male"} and p.seeds == {"acg": 1}  # no shared dicts
    with pytest.raises(TypeError, match="bogus"):
        p.derive("x", bogus=1)
