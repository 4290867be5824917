"""The training data path over RecordIO: layouts, labels, RGB order, flips, sampler, workers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fdta_core.errors import ConfigError, DatasetError
from fdta_core.imagecodec import encode_jpeg
from fdta_core.recordio import IRHeader, RecordWriter, pack, write_property
from fdta_core.testing.train import write_synthetic_rec
from fdta_core.train.data import EpochBatchSampler, RecFaceDataset, make_loader, to_model_input
from fdta_core.train.recipes import make_config
from fdta_core.train.trainer import run_training


def _labels_and_pixels(ds):
    out = {}
    for i in range(len(ds)):
        img, label = ds[i]
        out.setdefault(label, []).append(int(img.sum()))
    return {k: sorted(v) for k, v in out.items()}


def test_insightface_and_dali_layouts_hold_the_same_data(tmp_path):
    a = RecFaceDataset(
        write_synthetic_rec(tmp_path / "a", 5, 6, size=32, layout="insightface"), image_size=32
    )
    b = RecFaceDataset(write_synthetic_rec(tmp_path / "b", 5, 6, size=32, layout="dali"), image_size=32)
    assert (a.kind, b.kind) == ("insightface", "dali")
    assert a.num_classes == b.num_classes == 5 and len(a) == len(b) == 30
    assert _labels_and_pixels(a) == _labels_and_pixels(b)


def _write_colour_set(folder, header=True):
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    folder.mkdir()
    with RecordWriter(folder / "train.rec", folder / "train.idx") as w:
        base = 1 if header else 0
        if header:
            w.write(0, pack(IRHeader(2, (4.0, 7.0))))
        for i, c in enumerate(colours):
            img = np.zeros((32, 32, 3), np.uint8)
            img[:, :16] = c  # left half coloured: shows flips
            w.write(base + i, pack(IRHeader(0, float(i), base + i), encode_jpeg(img)))
        if header:
            for i in range(3):
                w.write(4 + i, pack(IRHeader(2, (float(1 + i), float(2 + i)))))
    return folder


@pytest.mark.parametrize("header", [True, False])
def test_rgb_order_flip_and_normalisation(tmp_path, header):
    ds = RecFaceDataset(_write_colour_set(tmp_path / "c", header), image_size=32)
    assert ds.kind == ("insightface" if header else "plain")
    imgs, labels = ds.__getitems__([(0, False), (1, False), (2, True)])
    assert labels.tolist() == [0, 1, 2]
    assert imgs.dtype == torch.uint8 and imgs.shape == (3, 32, 32, 3)
    for j in range(3):
        left, right = imgs[j, :, :8].float().mean((0, 1)), imgs[j, :, 24:].float().mean((0, 1))
        lit, dark = (right, left) if j == 2 else (left, right)
        assert int(lit.argmax()) == j and lit.max() > 200 and dark.max() < 30
    x = to_model_input(imgs, "cpu")
    assert x.shape == (3, 3, 32, 32) and x.is_contiguous()
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.allclose(x, (imgs.permute(0, 3, 1, 2).float() - 127.5) / 127.5)


def test_sampler_shards_resumes_and_is_deterministic():
    full = [list(EpochBatchSampler(100, 8, rank=r, world_size=2, seed=5)) for r in range(2)]
    assert len(full[0]) == len(full[1]) == 100 // 16
    seen = [i for rank in full for batch in rank for i, _ in batch]
    assert len(seen) == len(set(seen)) == 96
    s = EpochBatchSampler(100, 8, rank=1, world_size=2, seed=5)
    s.set_epoch(0, 4)
    assert list(s) == full[1][4:]
    s.set_epoch(1)
    other = list(s)
    assert other != full[1] and other == list(s)
    assert {f for b in full[0] for _, f in b} == {True, False}
    with pytest.raises(ConfigError):
        EpochBatchSampler(10, 8, world_size=2)


def test_workers_open_the_file_themselves_and_give_the_same_batches(tmp_path):
    ds = RecFaceDataset(write_synthetic_rec(tmp_path / "w", 4, 8, size=32), image_size=32)
    ds.reader.read(int(ds.image_keys[0]))  # an open handle in the parent must not be shared
    s = EpochBatchSampler(len(ds), 8, seed=1)
    serial = list(make_loader(ds, s, num_workers=0))
    parallel = list(make_loader(ds, s, num_workers=2))
    assert len(serial) == len(parallel) == 4
    for (a, la), (b, lb) in zip(serial, parallel, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_bad_sets_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        RecFaceDataset(tmp_path / "nothing")
    folder = write_synthetic_rec(tmp_path / "p", 3, 4, size=32)
    write_property(folder, 7, (32, 32))
    with pytest.raises(DatasetError, match="7 classes"):
        RecFaceDataset(folder, image_size=32)
    folder = write_synthetic_rec(tmp_path / "q", 3, 4, size=32)
    cfg = make_config("tiny", data=str(folder), output=str(tmp_path / "run"), num_classes=5, max_steps=2)
    with pytest.raises(DatasetError, match="5 classes"):
        run_training(cfg)
    assert '"failed"' in (tmp_path / "run" / "state.json").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_requested_without_gpu(tmp_path):
    folder = write_synthetic_rec(tmp_path / "g", 3, 4, size=32)
    cfg = make_config("tiny", data=str(folder), output=str(tmp_path / "run"), device="cuda", max_steps=2)
    with pytest.raises(ConfigError, match="GPU"):
        run_training(cfg)


def test_cli_train_reports_a_dead_training_process(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    from fdta_core.cli import main as cli_main

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    folder = write_synthetic_rec(tmp_path / "d", 3, 4, size=32)
    write_property(folder, 9, (32, 32))  # disagrees with the data: the training process exits with an error
    rc = cli_main(["train", "--preset", "tiny", "--data", str(folder), "--output", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "training exited with status" in err
    # a data error is not cured by resuming: the message gives the fix, not "run again to resume"
    assert "fails the same way: rewrite the property file" in err and "to resume" not in err
    assert "9 classes" in (tmp_path / "run" / "state.json").read_text()


def _chunked_set(root, *, overlap=False):
    """A data-set folder of three chunks written out of identity order (FDTADatasetWriter's layout)."""
    from fdta_core.dataset import write_faceset
    from fdta_core.faceset import FaceSet, Provenance

    def faces(start, n_id, per):
        labels = np.repeat(np.arange(start, start + n_id), per)
        rng = np.random.default_rng(start)
        imgs = rng.integers(0, 256, (len(labels), 112, 112, 3), dtype=np.uint8)
        return FaceSet(imgs, labels, [Provenance(identity=int(i)) for i in labels])

    write_faceset(faces(10, 2, 3), root, start=10, count=2)
    write_faceset(faces(0, 3, 2), root, start=0, count=3)
    write_faceset(faces(5, 1, 4), root, start=5, count=1)
    if overlap:  # a chunk copied under another name (the writer itself refuses overlapping ranges)
        import shutil

        shutil.copytree(root / "chunks" / "000000000-000000003", root / "chunks" / "000000020-000000023")
    return root


def test_a_dataset_root_trains_on_every_chunk_labelled_as_merge_would(tmp_path):
    """The trainer reads a data-set root of chunks directly: same images, labels and order as its merge."""
    from fdta_core.dataset import merge
    from fdta_core.train.data import ChunkedFaceDataset, open_face_dataset

    root = _chunked_set(tmp_path / "ds")
    chunked = open_face_dataset(root, image_size=112)
    assert isinstance(chunked, ChunkedFaceDataset)
    assert chunked.num_classes == 6 and len(chunked) == 6 + 4 + 6
    assert chunked.identities == [0, 1, 2, 5, 10, 11]
    merge(tmp_path / "merged", [root])
    merged = open_face_dataset(tmp_path / "merged", image_size=112)
    assert isinstance(merged, RecFaceDataset)
    assert chunked.labels.tolist() == merged.labels.tolist()
    for i in range(len(chunked)):  # the same image at the same index (JPEG payloads are copied by merge)
        a, la = chunked[i]
        b, lb = merged[i]
        assert la == lb and torch.equal(a, b)
    batch = [(0, False), (15, True), (7, False)]
    xa, ya = chunked.__getitems__(batch)
    xb, yb = merged.__getitems__(batch)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the data loader with worker processes opens the chunk files itself
    sampler = EpochBatchSampler(len(chunked), 4, seed=3)
    got = [y.tolist() for _, y in make_loader(chunked, sampler, num_workers=1)]
    want = [
        y.tolist() for _, y in make_loader(merged, EpochBatchSampler(len(merged), 4, seed=3), num_workers=0)
    ]
    assert got == want


def test_a_dataset_root_is_never_silently_one_chunk(tmp_path):
    from fdta_core.train.data import open_face_dataset

    with pytest.raises(DatasetError, match="identity 0 is in chunk"):
        open_face_dataset(_chunked_set(tmp_path / "dup", overlap=True))
    (tmp_path / "empty" / "chunks").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no committed chunk"):
        open_face_dataset(tmp_path / "empty")
    (tmp_path / "neither").mkdir()
    with pytest.raises(DatasetError, match="neither train.rec nor a chunks"):
        open_face_dataset(tmp_path / "neither")


def test_training_on_a_root_that_grew_refuses_to_resume(tmp_path):
    from fdta_core.dataset import write_faceset
    from fdta_core.faceset import FaceSet, Provenance

    root = _chunked_set(tmp_path / "ds")
    common = dict(data=str(root), output=str(tmp_path / "run"), image_size=32, batch_size=4, save_every=2)
    state = run_training(make_config("tiny", max_steps=2, **common))
    assert state["status"] == "finished"
    run = (tmp_path / "run" / "run.json").read_text()
    assert '"num_classes": 6' in run and '"layout": "chunks"' in run
    labels = np.array([20, 20])
    imgs = np.zeros((2, 112, 112, 3), np.uint8)
    write_faceset(FaceSet(imgs, labels, [Provenance(identity=20)] * 2), root, start=20, count=1)
    with pytest.raises(DatasetError, match="chunks added or removed"):
        run_training(make_config("tiny", max_steps=4, **common))
