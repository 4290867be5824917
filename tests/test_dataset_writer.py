"""Chunk writer: layout, manifest, atomic replace, and bad input (each error says what and where;
committed chunks are never damaged; the next run continues)."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from fdta_core.dataset import (
    EXAMPLE_QUERIES,
    ChunkWriter,
    DatasetChunk,
    check_jpeg,
    inspect,
    list_chunks,
    query,
    write_chunk,
    write_faceset,
)
from fdta_core.errors import DatasetError, InputError
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.imagecodec import decode_image
from fdta_core.recordio import RecordReader, RecordWriter, read_layout, read_property, unpack


def make_faceset(start: int, n_id: int, per: int, seed: int = 0) -> FaceSet:
    rng = np.random.default_rng(seed + start)
    labels = np.repeat(np.arange(start, start + n_id), per)
    # smooth images with a per-image offset: decodable, distinct, quick to encode
    base = np.add.outer(np.arange(112), np.arange(112)).astype(np.int64)
    imgs = np.stack(
        [
            (base[..., None] + np.array([k * 7, k * 13, k * 29]) + rng.integers(0, 4)) % 256
            for k in range(len(labels))
        ]
    ).astype(np.uint8)
    prov = [
        Provenance(
            identity=int(lab),
            attributes={"gender": "female" if lab % 2 else "male", "age": "30s"},
            seeds={"acg": 1000 + int(lab), "stg": 5000 + k},
            reference_key=f"ref/{lab}",
            age_target=30.0 + k,
            csim=0.4 + 0.05 * (k % 5),
            history=["acg", "stg", "csim"],
        )
        for k, lab in enumerate(labels)
    ]
    return FaceSet(imgs, labels, prov)


def test_chunk_is_a_sound_insightface_set_with_manifest(tmp_path):
    fs = make_faceset(100, 4, 3)
    info = write_faceset(fs, tmp_path / "ds", start=100, count=5, workers=2, batch_size=2)
    assert info.name == "000000100-000000105" and info.images == 12 and info.classes == 4
    assert info.identities == [100, 101, 102, 103]
    folder = tmp_path / "ds" / "chunks" / info.name
    assert sorted(p.name for p in folder.iterdir()) == [
        "chunk.json",
        "manifest.sqlite",
        "property",
        "train.idx",
        "train.rec",
    ]
    assert read_property(folder) == (4, 112, 112)
    with RecordReader(folder) as r:
        lay = read_layout(r, scan_labels=True)
        assert lay.kind == "insightface" and lay.num_images == 12 and lay.num_classes == 4
        assert lay.identity_ranges == [(1, 4), (4, 7), (7, 10), (10, 13)]
        assert lay.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        head = r.read_header(0)
        assert head.label == (13.0, 17.0) and r.keys[-1] == 0  # header written last, as the golden set
        # the JPEG payloads decode to the input faces (q95: small error)
        for k in (1, 12):
            h, payload = unpack(r.read(k))
            assert h.flag == 0 and h.id == k
            check_jpeg(payload)
            err = np.abs(decode_image(payload).astype(int) - fs.images[k - 1].astype(int)).mean()
            assert err < 4.0
    # manifest: one row per image with the original identity and the provenance
    rows = query(
        folder,
        "SELECT key, label, identity, chunk, json_extract(seeds,'$.acg'), csim, history FROM images ORDER BY key",
    )
    assert [r[0] for r in rows] == list(range(1, 13))
    assert rows[3][1:5] == (1, 101, info.name, 1101)
    assert json.loads(rows[0][6]) == ["acg", "stg", "csim"]
    for sql in EXAMPLE_QUERIES.values():
        query(folder, sql)  # every documented query runs
    by_gender = dict((g, n) for g, n, _ in query(folder, EXAMPLE_QUERIES["images per gender"]))
    assert by_gender == {"male": 6, "female": 6}
    rep = inspect(tmp_path / "ds")
    assert rep.ok, rep.errors
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["images"] == 12
    # FDTA_DATASET: the trainer trains on the data set root (all its chunks), never the one chunk
    out = DatasetChunk(dataset=str(tmp_path / "ds"), chunk=info)
    assert out.path == info.path and (tmp_path / "ds" / "chunks") in folder.parents
    assert out.train_folder() == str(tmp_path / "ds")


def test_streaming_write_and_replace_same_range(tmp_path):
    fs = make_faceset(0, 3, 2)
    info = write_chunk(tmp_path, 0, 3, ((im, lab, p) for im, lab, p in fs), workers=1)
    assert info.images == 6
    fs2 = make_faceset(0, 3, 4, seed=9)
    # a chunk of unknown origin is replaced only on request (tests/test_chunk_safety.py covers the rest)
    info2 = write_faceset(fs2, tmp_path, start=0, count=3, overwrite=True)
    assert info2.images == 12 and info2.replaced[-1]["images"] == 6
    chunks = list_chunks(tmp_path)
    assert [c.name for c in chunks] == ["000000000-000000003"] and chunks[0].images == 12
    assert not [p for p in (tmp_path / "chunks").iterdir() if p.name.startswith(".")]
    assert inspect(tmp_path).ok


def test_overlapping_range_is_refused_and_committed_chunk_kept(tmp_path):
    write_faceset(make_faceset(0, 5, 1), tmp_path, start=0, count=5)
    with pytest.raises(InputError, match="overlaps committed chunk 000000000-000000005"):
        write_faceset(make_faceset(3, 4, 1), tmp_path, start=3, count=4)
    assert [c.name for c in list_chunks(tmp_path)] == ["000000000-000000005"]
    assert inspect(tmp_path).ok


@pytest.mark.parametrize(
    "image, identity, match",
    [
        (np.zeros((64, 64, 3), np.uint8), 1, r"image 2 \(identity 1\).*shape \[64, 64, 3\]"),
        (np.zeros((112, 112), np.uint8), 1, r"shape \[112, 112\]"),
        (np.zeros((112, 112, 3), np.float32), 1, "dtype float32, expected uint8"),
        ([[0]], 1, "expected a numpy array"),
        (np.zeros((112, 112, 3), np.uint8), 7, "identity 7 is outside the chunk's range 0..4"),
        (np.zeros((112, 112, 3), np.uint8), -1, "identity -1 is outside"),
        (np.zeros((112, 112, 3), np.uint8), 0, "images of identity 0 are not contiguous"),
    ],
)
def test_bad_images_and_labels_name_what_and_where(tmp_path, image, identity, match):
    write_faceset(make_faceset(10, 2, 1), tmp_path, start=10, count=2)  # a committed chunk to protect
    w = ChunkWriter(tmp_path, 0, 5, workers=1)
    w.add(np.zeros((112, 112, 3), np.uint8), 0)
    w.add(np.zeros((112, 112, 3), np.uint8), 1)
    with pytest.raises(InputError, match=match) as err:
        w.add(image, identity)
    assert "chunk 000000000-000000005" in str(err.value)
    # nothing of the failed chunk is left; the committed one is intact; the next run continues
    assert [c.name for c in list_chunks(tmp_path)] == ["000000010-000000012"]
    assert not [p for p in (tmp_path / "chunks").iterdir() if p.name.startswith(".")]
    write_faceset(make_faceset(0, 5, 1), tmp_path, start=0, count=5)
    rep = inspect(tmp_path)
    assert rep.ok and rep.images == 7


def test_empty_faceset_and_empty_range(tmp_path):
    with pytest.raises(InputError, match="faceset is empty"):
        write_faceset(FaceSet.empty(), tmp_path)
    with pytest.raises(InputError, match="no images to write for chunk 000000000-000000004"):
        with ChunkWriter(tmp_path, 0, 4) as w:
            w.commit()
    with pytest.raises(InputError, match="empty or negative"):
        ChunkWriter(tmp_path, 5, 5)
    assert list_chunks(tmp_path) == []


def test_unwritable_dataset_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatasetError, match=str(blocker)):
        write_faceset(make_faceset(0, 1, 1), blocker / "ds")
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(DatasetError, match="cannot write"):
                write_faceset(make_faceset(0, 1, 1), ro / "ds")
        finally:
            ro.chmod(0o700)


def test_full_disk_mid_chunk_leaves_committed_chunks_intact(tmp_path, monkeypatch):
    write_faceset(make_faceset(0, 3, 2), tmp_path, start=0, count=3)
    calls = {"n": 0}
    real = RecordWriter.write_joined  # the writer's one write per batch

    def full(self, *args):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)

    monkeypatch.setattr(RecordWriter, "write_joined", full)
    with pytest.raises(
        DatasetError, match="no space left on the device while writing chunk 000000003-000000006"
    ) as err:
        write_faceset(make_faceset(3, 3, 4), tmp_path, start=3, count=3, batch_size=2)
    assert "Fix: free disk space" in str(err.value)
    monkeypatch.setattr(RecordWriter, "write_joined", real)
    assert [c.name for c in list_chunks(tmp_path)] == ["000000000-000000003"]
    assert not [p for p in (tmp_path / "chunks").iterdir() if p.name.startswith(".")]
    write_faceset(make_faceset(3, 3, 4), tmp_path, start=3, count=3)  # next run continues
    rep = inspect(tmp_path)
    assert rep.ok and rep.images == 6 + 12 and rep.classes == 6


def test_progress_is_reported_and_may_interrupt(tmp_path):
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done >= 8:
            raise KeyboardInterrupt  # stands for ComfyUI's interrupt: it must propagate

    with pytest.raises(KeyboardInterrupt):
        write_faceset(make_faceset(0, 4, 4), tmp_path, batch_size=4, workers=1, progress=progress)
    assert seen[0] == (4, 16)
    assert list_chunks(tmp_path) == []
    assert not (tmp_path / "chunks").exists()  # the folder this write created went with it


def test_manifest_json_fast_path_matches_the_json_module():
    """Manifest JSON columns come from json's C encoder built once; the text is what ``_ENCODE`` writes."""
    from fdta_core.dataset.manifest import _ENCODE, _json

    values = [
        {"gender": "female", "age": "30-40"},
        {"b": [1, 2.5, None, True], "a": {"z": "é", "y": float("inf")}},
        ["acg", "stg", "csim"],
        {"seed": np.int64(7), "score": np.float32(0.5)},  # numpy scalars go through default=str
        {1: "one", 2: "two"},
    ]
    for v in values:
        assert _json(v) == _ENCODE(v)
    assert _json({}) == "{}" and _json([]) == "[]"


@pytest.mark.parametrize(
    ("backend", "direct_io", "env"),
    [
        ("pillow", False, None),
        ("auto", False, None),
        ("auto", True, None),
        ("auto", None, "0"),
        ("auto", None, None),
    ],
)
def test_train_rec_is_byte_identical_to_a_plain_sequential_write(
    tmp_path, backend, direct_io, env, monkeypatch
):
    """The threaded, batched writer produces exactly the bytes of encoding each face in order and
    appending ``pack`` records one by one (the speed work must not change the data set), through the
    page cache or past it (O_DIRECT, used wherever the file system takes it)."""
    import fdta_core.dataset.writer as writer_mod
    from fdta_core.imagecodec import jpeg_encoder
    from fdta_core.recordio import IRHeader, pack

    made = []

    class Spy(RecordWriter):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self.direct)

    monkeypatch.setattr(writer_mod, "RecordWriter", Spy)
    if env is None:
        monkeypatch.delenv("FDTA_DIRECT_IO", raising=False)
    else:
        monkeypatch.setenv("FDTA_DIRECT_IO", env)
    fs = make_faceset(0, 5, 7)
    info = write_faceset(
        fs,
        tmp_path / "ds",
        jpeg_backend=backend,
        batch_size=3,
        workers=3,
        sync_every=1000,
        direct_io=direct_io,
    )
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o600))
        takes_direct = hasattr(os, "O_DIRECT")
    except OSError:
        takes_direct = False
    wanted = env != "0" if direct_io is None else direct_io  # None: on unless FDTA_DIRECT_IO=0
    assert made == [wanted and takes_direct]
    _, encode = jpeg_encoder(backend)
    ref = tmp_path / "ref"
    ref.mkdir()
    with RecordWriter(ref / "train.rec", ref / "train.idx") as w:
        n, c = len(fs), 5
        for k in range(n):
            w.write(k + 1, pack(IRHeader(0, float(fs.labels[k]), k + 1, 0), encode(fs.images[k])))
        for label in range(c):
            w.write(
                n + 1 + label,
                pack(IRHeader(2, (float(1 + 7 * label), float(8 + 7 * label)), n + 1 + label, 0)),
            )
        w.write(0, pack(IRHeader(2, (float(n + 1), float(n + c + 1)), 0, 0)))
    got = tmp_path / "ds" / "chunks" / info.name
    assert (got / "train.rec").read_bytes() == (ref / "train.rec").read_bytes()
    assert (got / "train.idx").read_bytes() == (ref / "train.idx").read_bytes()


def test_manifest_rows_read_back_exactly_across_insert_statements(tmp_path):
    """Rows go in as multi-row INSERTs of up to ROWS_PER_INSERT: every value (None, int, float, text)
    reads back as given, in key order, whatever the batch lengths."""
    import sqlite3

    from fdta_core.dataset.manifest import IMAGE_COLUMNS, ROWS_PER_INSERT, ManifestWriter

    rng = np.random.default_rng(0)
    rows = []
    for k in range(2 * ROWS_PER_INSERT + 7):
        row = [k, k // 3, k // 3, "000000000-000000050", k, '{"gender": "male"}', "{}", None,
               float(rng.uniform(18, 80)) if k % 2 else None, float(rng.uniform(-1, 1)), '["acg"]', "{}",
               int(rng.integers(1000, 9000)), f"{k:064x}"]  # fmt: skip
        rows.append(tuple(row[: len(IMAGE_COLUMNS)]))
    m = ManifestWriter(tmp_path / "manifest.sqlite")
    m.add_images(rows[:5])
    m.add_images(iter(rows[5:]))
    m.close()
    got = (
        sqlite3.connect(tmp_path / "manifest.sqlite")
        .execute(f"SELECT {', '.join(IMAGE_COLUMNS)} FROM images ORDER BY key")
        .fetchall()
    )
    assert got == rows


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("direct_io", [False, True])
def test_a_writer_that_fails_to_start_keeps_no_file_open(tmp_path, monkeypatch, direct_io):
    """A manifest that cannot be created (a full disk) removes the chunk's folder and closes its
    train.rec: an open descriptor would hold the removed file's space until the process exits."""
    import gc

    import fdta_core.dataset.writer as writer_mod

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod, "ManifestWriter", full)
    with pytest.raises(DatasetError, match="no space left"):
        ChunkWriter(tmp_path / "ds", 0, 10, direct_io=direct_io)
    gc.collect()
    fds = [os.readlink(f"/proc/self/fd/{f}") for f in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{f}")]  # fmt: skip
    assert not [p for p in fds if str(tmp_path) in p]
