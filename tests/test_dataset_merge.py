"""merge / shuffle / rec2image and the ``fdta rec`` CLI."""

from __future__ import annotations

import hashlib
import json
import numbers
import shutil

import numpy as np
import pytest

from fdta_core.cli import main as cli
from fdta_core.dataset import inspect, merge, query, rec2image, shuffle, write_faceset
from fdta_core.errors import DatasetError
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.recordio import RecordReader, read_layout, read_property, unpack


def make_faceset(start: int, n_id: int, per: int) -> FaceSet:
    labels = np.repeat(np.arange(start, start + n_id), per)
    base = np.add.outer(np.arange(112), np.arange(112)).astype(np.int64)
    imgs = np.stack(
        [(base[..., None] + np.array([k, 3 * k, lab]) * 5) % 256 for k, lab in enumerate(labels)]
    ).astype(np.uint8)
    prov = [
        Provenance(
            identity=int(lab),
            attributes={"gender": "female" if lab % 2 else "male"},
            seeds={"acg": int(lab)},
            csim=0.3 + 0.1 * (k % 4),
            history=["acg"],
        )
        for k, lab in enumerate(labels)
    ]
    return FaceSet(imgs, labels, prov)


def mxface_dataset_items(folder):
    """arcface_torch's MXFaceDataset indexing logic, on our reader."""
    r = RecordReader(folder)
    header, _ = unpack(r.read(0))
    assert header.flag > 0
    imgidx = np.array(range(1, int(header.label[0])))
    out = []
    for idx in imgidx:
        h, img = unpack(r.read(int(idx)))
        label = h.label if isinstance(h.label, numbers.Number) else h.label[0]
        out.append((int(idx), int(label), hashlib.sha256(img).hexdigest()))
    return out


@pytest.fixture
def two_machines(tmp_path):
    """Two dataset folders (two 'machines'), chunks written out of order, uneven identity sizes."""
    a, b = tmp_path / "machine_a", tmp_path / "machine_b"
    write_faceset(make_faceset(20, 3, 2), a, start=20, count=10)  # identities 20..22
    write_faceset(make_faceset(0, 2, 3), a, start=0, count=10)  # identities 0..1
    write_faceset(make_faceset(10, 4, 1), b, start=10, count=10)  # identities 10..13
    return a, b


def test_merge_renumbers_by_original_identity_and_copies_payloads(tmp_path, two_machines):
    a, b = two_machines
    s1 = merge(tmp_path / "m1", [b, a])
    merge(tmp_path / "m2", [a / "chunks" / "000000020-000000030", b, a / "chunks" / "000000000-000000010"])
    assert s1["images"] == 6 + 6 + 4 and s1["classes"] == 9
    # deterministic: same bytes whatever the argument order
    for f in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "m1" / f).read_bytes() == (tmp_path / "m2" / f).read_bytes()
    out = tmp_path / "m1"
    assert read_property(out) == (9, 112, 112)
    with RecordReader(out) as r:
        lay = read_layout(r, scan_labels=True)
    assert lay.kind == "insightface" and lay.num_images == 16 and lay.num_classes == 9
    assert lay.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7, 7, 8, 8]
    assert lay.identity_ranges[0] == (1, 4) and lay.identity_ranges[-1] == (15, 17)
    items = mxface_dataset_items(out)
    assert [k for k, _, _ in items] == list(range(1, 17))
    # payloads are the chunk's JPEG bytes, unchanged
    src = {}
    for chunk in sorted((a / "chunks").iterdir()) + sorted((b / "chunks").iterdir()):
        for key, ident, sha in query(chunk, "SELECT key, identity, sha256 FROM images"):
            src[(ident, key)] = sha
    rows = query(out, "SELECT key, label, identity, source_key, sha256, chunk FROM images ORDER BY key")
    assert [r[0] for r in rows] == list(range(1, 17))
    originals = [0, 1, 10, 11, 12, 13, 20, 21, 22]
    for (_key, label, sha), row in zip(items, rows, strict=True):
        assert row[1] == label and row[2] == originals[label]
        assert row[4] == sha == src[(row[2], row[3])]
    assert query(out, "SELECT label, identity FROM identities ORDER BY label") == list(enumerate(originals))
    rep = inspect(out)
    assert rep.ok and rep.manifest_rows == 16, rep.errors
    # a merged output merges again (e.g. shards of shards) to the same result
    merge(tmp_path / "m3", [out])
    assert (tmp_path / "m3" / "train.rec").read_bytes() == (out / "train.rec").read_bytes()
    assert query(tmp_path / "m3", "SELECT identity, chunk, source_key FROM images ORDER BY key") == [
        r[2:3] + (r[5], r[3]) for r in rows
    ]


def test_merge_refuses_duplicates_and_keeps_old_output(tmp_path, two_machines):
    a, b = two_machines
    merge(tmp_path / "m", [a])
    before = (tmp_path / "m" / "train.rec").read_bytes()
    c = tmp_path / "machine_c"
    write_faceset(make_faceset(11, 1, 2), c, start=11, count=1)
    with pytest.raises(DatasetError, match="identity 11 appears in"):
        merge(tmp_path / "m", [a, b, c])
    with pytest.raises(DatasetError, match="given twice"):
        merge(tmp_path / "m", [a, a])
    with pytest.raises(DatasetError, match="neither a chunk"):
        merge(tmp_path / "m", [tmp_path / "nothing"])
    assert (tmp_path / "m" / "train.rec").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]
    merge(tmp_path / "m", [a, b])  # replaces the earlier merge
    assert inspect(tmp_path / "m").images == 16
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="holds other files"):
        merge(other, [a])
    assert (other / "notes.txt").read_text() == "keep me"


def test_shuffle_reproduces_mxnet_dali_golden(shared_testdata, tmp_path):
    src = shared_testdata / "recordio" / "insightface_layout"
    gold = shared_testdata / "recordio" / "dali_layout"
    summary = shuffle(src, tmp_path / "dali", seed=102)
    assert summary["images"] == 14
    assert (tmp_path / "dali" / "train.rec").read_bytes() == (gold / "train.rec").read_bytes()
    assert (tmp_path / "dali" / "train.idx").read_bytes() == (gold / "train.idx").read_bytes()
    rep = inspect(tmp_path / "dali")
    assert rep.ok and rep.layout == "dali" and rep.classes == 5


def test_golden_sets_pass_info(shared_testdata):
    for name, layout in (("insightface_layout", "insightface"), ("dali_layout", "dali")):
        rep = inspect(shared_testdata / "recordio" / name)
        assert rep.ok, rep.errors
        assert rep.layout == layout and rep.images == 14 and rep.classes == 5


def test_shuffle_and_rec2image_of_merged(tmp_path, two_machines):
    a, _ = two_machines
    merge(tmp_path / "m", [a])
    s = shuffle(tmp_path / "m", tmp_path / "d", seed=7)
    assert s["images"] == 12
    with RecordReader(tmp_path / "d") as r:
        assert r.keys == list(range(12))
        assert 0 in r and unpack(r.read(0))[0].flag == 0
    rep = inspect(tmp_path / "d")
    assert rep.ok and rep.layout == "dali" and rep.images == 12 and rep.classes == 5
    out = rec2image(tmp_path / "m", tmp_path / "imgs")
    assert out["images"] == 12 and out["classes"] == 5
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir() if p.is_dir()) == ["0", "1", "2", "3", "4"]
    assert sorted(p.name for p in (tmp_path / "imgs" / "0").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    with RecordReader(tmp_path / "m") as r:
        assert (tmp_path / "imgs" / "2" / "7.jpg").read_bytes() == unpack(r.read(7))[1]


def test_cli(tmp_path, two_machines, capsys):
    a, b = two_machines
    assert cli(["rec", "merge", str(tmp_path / "m"), str(a), str(b)]) == 0
    capsys.readouterr()
    assert cli(["rec", "info", str(tmp_path / "m"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (
        rep["ok"]
        and rep["images"] == 16
        and rep["classes"] == 9
        and rep["layout"] == "insightface"
        and rep["errors"] == []
        and rep["manifest_rows"] == 16
        and "chunks" not in rep
    )
    assert cli(["rec", "info", str(a)]) == 0
    assert "status:   OK" in capsys.readouterr().out
    assert cli(["rec", "shuffle", str(tmp_path / "m"), str(tmp_path / "d"), "--seed", "3"]) == 0
    assert cli(["rec2image", str(tmp_path / "m"), str(tmp_path / "i")]) == 0
    assert len(list((tmp_path / "i").glob("*/*.jpg"))) == 16
    # a broken copy: exit 1, readable errors
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "m", bad)
    data = bytearray((bad / "train.rec").read_bytes())
    (bad / "train.rec").write_bytes(bytes(data[:-100]))
    capsys.readouterr()
    assert cli(["rec", "info", str(bad), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert not rep["ok"] and any("truncated" in e for e in rep["errors"])
    # write a saved faceset through the CLI
    npz = tmp_path / "fs.npz"
    make_faceset(40, 2, 2).save_npz(str(npz))
    assert cli(["rec", "write", str(npz), str(tmp_path / "ds"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "000000040-000000042"
    assert cli(["rec", "info", str(tmp_path / "missing")]) == 1


def test_merge_of_a_set_without_manifest(shared_testdata, tmp_path):
    """An insightface set written elsewhere (MXNet's golden set): identities are its labels."""
    src = shared_testdata / "recordio" / "insightface_layout"
    s = merge(tmp_path / "m", [src])
    assert s["images"] == 14 and s["classes"] == 5
    rep = inspect(tmp_path / "m")
    assert rep.ok and rep.manifest_rows == 14, rep.errors
    with RecordReader(src) as a, RecordReader(tmp_path / "m") as b:
        for k in range(1, 15):
            ha, pa = unpack(a.read(k))
            hb, pb = unpack(b.read(k))
            assert pa == pb and ha.label == hb.label
    assert query(tmp_path / "m", "SELECT DISTINCT identity FROM images ORDER BY identity") == [
        (i,) for i in range(5)
    ]


def test_renumber_merges_independent_sets_whose_ids_overlap(tmp_path):
    """Two independent data sets (both start at identity 0): labels run over the inputs in order."""
    ms1m, mpie = tmp_path / "syn_ms1m", tmp_path / "syn_mpie"
    write_faceset(make_faceset(0, 3, 2), ms1m, start=0, count=3)  # identities 0..2, 2 images each
    write_faceset(make_faceset(3, 2, 1), ms1m, start=3, count=2)  # identities 3..4, 1 image each
    write_faceset(make_faceset(0, 2, 3), mpie, start=0, count=2)  # identities 0..1, 3 images each
    with pytest.raises(DatasetError, match="--renumber"):
        merge(tmp_path / "m", [ms1m, mpie])
    s = merge(tmp_path / "m", [ms1m, mpie], renumber=True)
    assert s["classes"] == 5 + 2 and s["images"] == 6 + 2 + 6 and s["renumbered"]
    assert [(i["label_start"], i["label_end"], i["classes"]) for i in s["inputs"]] == [(0, 5, 5), (5, 7, 2)]
    rep = inspect(tmp_path / "m")
    assert rep.ok, rep.errors
    assert rep.classes == 7 and rep.manifest_rows == 14
    with RecordReader(tmp_path / "m") as r:
        lay = read_layout(r, scan_labels=True)
    assert lay.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 5, 5, 5, 6, 6, 6]
    # payloads: the first input's images first, then the second's, unchanged
    with RecordReader(ms1m / "chunks" / "000000000-000000003") as a, RecordReader(tmp_path / "m") as m:
        assert unpack(a.read(1))[1] == unpack(m.read(1))[1]
    with RecordReader(mpie / "chunks" / "000000000-000000002") as b, RecordReader(tmp_path / "m") as m:
        assert unpack(b.read(1))[1] == unpack(m.read(9))[1]
    # the manifest carries both sets: identity = new label, the original id and set in ``extra``
    rows = query(
        tmp_path / "m",
        "SELECT label, identity, json_extract(extra, '$.source_set'), json_extract(extra, '$.source_identity'), "
        "json_extract(attributes, '$.gender') FROM images ORDER BY key",
    )
    assert [r[0] for r in rows] == [r[1] for r in rows]
    assert [(r[2], r[3]) for r in rows][6:10] == [(0, 3), (0, 4), (1, 0), (1, 0)]
    assert rows[8][4] == "male"  # the provenance of the second set came along
    assert query(tmp_path / "m", "SELECT count(*) FROM identities") == [(7,)]
    # order given = order of labels: swapping the inputs puts Syn-MPIE first
    s2 = merge(tmp_path / "m2", [mpie, ms1m], renumber=True)
    assert [i["label_start"] for i in s2["inputs"]] == [0, 2]
    # duplicates inside one input are still refused
    dup = tmp_path / "dup"
    write_faceset(make_faceset(0, 1, 1), dup, start=0, count=1)
    with pytest.raises(DatasetError, match="identity 0 appears in"):
        merge(tmp_path / "m3", [mpie / "chunks" / "000000000-000000002", dup, ms1m], renumber=False)
    # the CLI: --renumber, info sound, identity count the sum
    assert cli(["rec", "merge", str(tmp_path / "m4"), str(ms1m), str(mpie), "--renumber"]) == 0
    assert inspect(tmp_path / "m4").classes == 7
