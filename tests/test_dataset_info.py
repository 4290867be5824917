"""``rec info`` finds every kind of damage, names the key/offset, and stays clean on sound sets."""

from __future__ import annotations

import shutil
import sqlite3
import struct

import numpy as np
import pytest

from fdta_core.dataset import inspect, merge, write_faceset
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.recordio import read_idx


@pytest.fixture(scope="module")
def sound(tmp_path_factory):
    root = tmp_path_factory.mktemp("info")
    labels = np.repeat(np.arange(3), 3)
    base = np.add.outer(np.arange(112), np.arange(112)).astype(np.int64)
    imgs = np.stack(
        [(base[..., None] + np.array([k, 2 * k, 3 * k]) * 11) % 256 for k in range(len(labels))]
    ).astype(np.uint8)
    fs = FaceSet(imgs, labels, [Provenance(identity=int(x)) for x in labels])
    write_faceset(fs, root / "ds", start=0, count=3)
    merge(root / "m", [root / "ds"])
    return root / "m"


def damaged(sound, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(sound, out)
    return out


def offset_of(folder, key):
    return read_idx(folder / "train.idx")[1][key]


def patch(folder, at, data):
    with open(folder / "train.rec", "r+b") as f:
        f.seek(at)
        f.write(data)


def errors_of(folder, **kw):
    rep = inspect(folder, **kw)
    assert not rep.ok
    return "\n".join(rep.errors)


def test_sound_set(sound):
    rep = inspect(sound)
    assert rep.ok and rep.errors == [] and rep.images == 9 and rep.classes == 3
    assert rep.layout == "insightface" and rep.property == [3, 112, 112] and rep.manifest_rows == 9


def test_truncated_rec(sound, tmp_path):
    d = damaged(sound, tmp_path)
    data = (d / "train.rec").read_bytes()
    (d / "train.rec").write_bytes(data[: offset_of(d, 5) + 100])
    text = errors_of(d)
    assert "key 5" in text and "truncated" in text


def test_bad_magic(sound, tmp_path):
    d = damaged(sound, tmp_path)
    patch(d, offset_of(d, 4), b"\x00\x00\x00\x00")
    text = errors_of(d)
    assert "key 4" in text and "bad magic 0x00000000" in text


def test_label_out_of_range_and_disagreeing_with_identity_record(sound, tmp_path):
    d = damaged(sound, tmp_path)
    patch(d, offset_of(d, 2) + 8 + 4, struct.pack("<f", 7.0))
    text = errors_of(d)
    assert "key 2: label 7 disagrees with the identity record that covers it (class 0)" in text
    assert "key 2: label 7 is outside 0..2 (property)" in text
    d2 = tmp_path / "frac"
    shutil.copytree(sound, d2)
    patch(d2, offset_of(d2, 3) + 8 + 4, struct.pack("<f", 0.5))
    assert "key 3: label 0.5 is not an integer" in errors_of(d2)


def test_identity_ranges_and_property(sound, tmp_path):
    d = damaged(sound, tmp_path)
    # identity record of class 1 (key N+2 = 11): label floats follow the 24-byte header
    patch(d, offset_of(d, 11) + 8 + 24, struct.pack("<ff", 5.0, 7.0))
    text = errors_of(d)
    assert "identity record 11: range [5, 7) should start at key 4" in text
    d2 = tmp_path / "prop"
    shutil.copytree(sound, d2)
    (d2 / "property").write_text("4,112,112")
    assert "says 4 classes, the header says 3" in errors_of(d2)


def test_jpeg_damage(sound, tmp_path):
    d = damaged(sound, tmp_path)
    jpeg_at = offset_of(d, 6) + 8 + 24
    patch(d, jpeg_at, b"\x00\x00")  # SOI gone
    assert "key 6: payload is not a JPEG (no SOI marker" in errors_of(d, decode=False)
    d2 = tmp_path / "dec"
    shutil.copytree(sound, d2)
    patch(d2, offset_of(d2, 7) + 8 + 24 + 2, b"\x00" * 40)  # header segments destroyed, markers kept
    assert inspect(d2, decode=False).ok  # markers only: not caught
    assert "key 7: JPEG does not decode" in errors_of(d2)


def test_index_and_manifest_damage(sound, tmp_path):
    d = damaged(sound, tmp_path)
    lines = (d / "train.idx").read_text().splitlines()
    k, off = lines[3].split("\t")
    lines[3] = f"{k}\t{int(off) + 4}"
    (d / "train.idx").write_text("\n".join(lines) + "\n")
    text = errors_of(d)
    assert f"key {k}" in text
    d2 = tmp_path / "man"
    shutil.copytree(sound, d2)
    with sqlite3.connect(d2 / "manifest.sqlite") as conn:
        conn.execute("UPDATE images SET label = 2 WHERE key = 1")
    assert "row for key 1 says label 2, the record says 0" in errors_of(d2)
    d3 = tmp_path / "garbage"
    shutil.copytree(sound, d3)
    with open(d3 / "train.rec", "ab") as f:
        f.write(b"\x01\x02\x03\x04")
    assert "4 trailing byte(s)" in errors_of(d3)
    (tmp_path / "noidx").mkdir()
    (tmp_path / "noidx" / "train.rec").write_bytes(b"garbage!")
    assert "bad magic" in errors_of(tmp_path / "noidx")


def test_dataset_folder_with_unfinished_chunk_warns_but_is_ok(sound, tmp_path):
    ds = sound.parent / "ds"
    rep = inspect(ds)
    assert rep.ok and rep.images == 9 and len(rep.chunks) == 1
    d = tmp_path / "ds"
    shutil.copytree(ds, d)
    (d / "chunks" / ".tmp-000000003-000000006-otherhost-1").mkdir()
    rep = inspect(d)
    assert rep.ok and "unfinished writes" in rep.warnings[0]
