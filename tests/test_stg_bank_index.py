"""The reference bank as an index: built once beside the data, rebuilt when the data change, read lazily
(a chunk decodes only the faces of the subjects its identities use), same picks as the in-memory bank."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from fdta_core.errors import DatasetError
from fdta_core.faces.identity import bank_subject_embeddings, subject_embeddings
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.recordio import RecordReader, unpack
from fdta_core.stg import ReferenceBank, STGSampler, mix, pick_styles
from fdta_core.stg import bank_index as bi
from fdta_core.testing.stg import tiny_model
from fdta_core.testing.train import write_synthetic_rec


def _rec_bank_in_memory(folder) -> ReferenceBank:
    """The same .rec read whole into memory: what the bank was before it became an index."""
    from fdta_core.imagecodec import decode_image

    reader = RecordReader(folder / "train.rec")
    n_img = int(reader.read_header(0).label[0]) - 1
    imgs, subs, keys = [], [], []
    for k in range(1, n_img + 1):
        h, payload = unpack(reader.read(k))
        imgs.append(decode_image(payload))
        subs.append(str(int(h.label)))
        keys.append(f"rec:train.rec#{k}")
    reader.close()
    return ReferenceBank(np.stack(imgs), keys, subs, [{} for _ in imgs])


@pytest.fixture
def counting(monkeypatch):
    """Counts the faces the index decodes."""
    reads: list[str] = []
    real = bi.BankIndex._read

    def read(self, file, loc, path, key):
        reads.append(key)
        return real(self, file, loc, path, key)

    monkeypatch.setattr(bi.BankIndex, "_read", read)
    return reads


def test_rec_index_is_built_once_beside_the_data_and_agrees_with_the_whole_set(tmp_path, counting):
    folder = write_synthetic_rec(tmp_path / "ms1m", num_classes=12, per_class=5)
    bank = ReferenceBank.from_rec(folder / "train.rec")
    assert bank.indexed and len(bank) == 60 and bank.n_subjects == 12
    dbs = list((folder / bi.CACHE_FOLDER).glob("*.bank.sqlite"))
    assert len(dbs) == 1 and not list((folder / bi.CACHE_FOLDER).glob("*.tmp-*"))
    assert counting == []  # building reads headers only when the property file says 112x112
    stamp = dbs[0].stat().st_mtime_ns
    again = ReferenceBank.from_rec(folder / "train.rec")
    assert dbs[0].stat().st_mtime_ns == stamp and len(again) == 60  # reused, not rebuilt
    whole = _rec_bank_in_memory(folder)
    assert bank.subjects == whole.subjects and bank.keys == whole.keys
    np.testing.assert_array_equal(bank.faces([0, 7, 59]), whole.images[[0, 7, 59]])
    for policy in ("subject", "random"):
        a = pick_styles(bank, range(30, 40), policy=policy, images_per_identity=4, run_seed=3)
        b = pick_styles(whole, range(30, 40), policy=policy, images_per_identity=4, run_seed=3)
        assert a == b


def test_a_chunk_decodes_only_the_faces_it_uses(tmp_path, counting):
    folder = write_synthetic_rec(tmp_path / "ms1m", num_classes=40, per_class=6)
    bank = ReferenceBank.from_rec(folder / "train.rec")
    source = FaceSet.from_sources(
        np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8),
        [Provenance(identity=i) for i in (10, 11, 12)],
    )
    res = mix(STGSampler(tiny_model(seed=1), "cpu", "fp32"), source, bank, images_per_identity=2, steps=1)
    used = {p.extra["stg_reference_subject"] for p in res.faceset.provenance}
    assert len(used) == 3
    # the sampler's batches and the contact sheet: 6 picked faces, each read at most twice, no others
    keys = {p.reference_key for p in res.faceset.provenance}
    assert set(counting) == keys and len(counting) <= 2 * len(keys)
    assert np.array_equal(res.faceset.images.shape, (6, 112, 112, 3))


def test_index_is_rebuilt_when_the_rec_changes(tmp_path):
    folder = write_synthetic_rec(tmp_path / "refs", num_classes=3, per_class=2, seed=0)
    first = ReferenceBank.from_rec(folder / "train.rec").faces([0])[0]
    write_synthetic_rec(tmp_path / "refs", num_classes=4, per_class=3, seed=5)
    os.utime(folder / "train.rec", ns=(1, 1))  # a different size already differs; make the time differ too
    bank = ReferenceBank.from_rec(folder / "train.rec")
    assert len(bank) == 12 and bank.n_subjects == 4
    assert not np.array_equal(bank.faces([0])[0], first)
    assert len(list((folder / bi.CACHE_FOLDER).glob("*.bank.sqlite"))) == 1


def test_limits_select_from_the_index(tmp_path):
    folder = write_synthetic_rec(tmp_path / "refs", num_classes=6, per_class=4)
    bank = ReferenceBank.from_rec(folder / "train.rec", first_subject=2, max_subjects=3, max_per_subject=2)
    assert bank.subjects == ["2", "2", "3", "3", "4", "4"]
    assert bank.keys[0] == "rec:train.rec#9" and bank.n_subjects == 3
    assert bank.subject_members(1).tolist() == [2, 3] and bank.subject_position("4") == 2
    assert bank.subject_position("0") is None
    whole = ReferenceBank.from_rec(folder / "train.rec")
    np.testing.assert_array_equal(bank.faces([2]), whole.faces([12]))
    ranged = ReferenceBank.from_rec(folder / "train.rec", first_subject=1, max_subjects=2)
    assert len(ranged) == 8 and ranged.keys[0] == "rec:train.rec#5" and ranged._index._ids is None
    with pytest.raises(DatasetError, match="no reference images selected"):
        ReferenceBank.from_rec(folder / "train.rec", first_subject=6)


def test_folder_is_aligned_once_and_a_failed_build_leaves_nothing(tmp_path):
    root = tmp_path / "refs"
    rng = np.random.default_rng(0)
    for subj in ("ann", "bob"):
        (root / subj).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(root / subj / "a.png")
        Image.fromarray(np.zeros((150, 140, 3), np.uint8)).save(root / subj / "photo.png")
    calls = []

    def align(img):
        calls.append(img.shape)
        return None if len(calls) == 2 else np.full((112, 112, 3), 9, np.uint8)  # bob's photo: no face

    def broken(img):
        raise RuntimeError("detector crashed")

    with pytest.raises(RuntimeError, match="detector crashed"):
        ReferenceBank.from_folder(root, align=broken)
    cache = tmp_path / bi.CACHE_FOLDER
    assert not [p for p in cache.iterdir() if not p.name.endswith(".lock")]  # no index, no temporary file
    bank = ReferenceBank.from_folder(root, align=align, align_id="det-A")
    assert calls == [(150, 140, 3), (150, 140, 3)] and len(bank) == 3
    assert bank.keys == ["folder:ann/a.png", "folder:ann/photo.png", "folder:bob/a.png"]
    np.testing.assert_array_equal(bank.faces([1])[0], np.full((112, 112, 3), 9, np.uint8))
    ReferenceBank.from_folder(root, align=align, align_id="det-A")
    assert len(calls) == 2  # the aligned faces come from the index
    ReferenceBank.from_folder(root, align=align, align_id="det-B")
    assert len(calls) == 4  # other face models: aligned again
    (root / "cid").mkdir()
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(root / "cid" / "x.png")
    assert ReferenceBank.from_folder(root, align=align, align_id="det-B").n_subjects == 3


def test_subject_embeddings_stream_and_cache(tmp_path):
    folder = write_synthetic_rec(tmp_path / "refs", num_classes=7, per_class=5)
    bank = ReferenceBank.from_rec(folder / "train.rec")
    whole = _rec_bank_in_memory(folder)
    w = np.random.default_rng(1).normal(size=(112 * 112 * 3 // 64, 16))
    batches = []

    def embed(x):
        batches.append(len(x))
        return x.reshape(len(x), -1, 64).astype(np.float64).mean(axis=2) @ w

    ref = subject_embeddings(whole.images, whole.subjects, embed)
    batches.clear()
    got = bank_subject_embeddings(bank, embed, cache_id="model-A", batch_size=8)
    assert list(got) == list(ref) and max(batches) <= 8
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)
    batches.clear()
    again = bank_subject_embeddings(bank, embed, cache_id="model-A")
    assert batches == [] and all(np.allclose(again[k], got[k]) for k in got)  # from the cache
    some = bank_subject_embeddings(bank, embed, names={"3", "5", "nobody"})
    assert sorted(some) == ["3", "5"] and sum(batches) == 10
    mem = bank_subject_embeddings(whole, embed, names={"3"})
    np.testing.assert_allclose(mem["3"], ref["3"], atol=1e-5)
