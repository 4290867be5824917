"""``fdta audit``: planted duplicate and real-person identities are found exactly; ``--write-filtered``
writes a set that passes ``fdta rec info`` and a second audit with nothing flagged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fdta_core.cli import main
from fdta_core.dataset.writer import write_faceset
from fdta_core.errors import InputError
from fdta_core.faces import load_face_pack
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.testing.faces import make_tiny_face_pack, synthetic_identity_faces

N_ID, PER, THR = 10, 3, 0.3


def _noisy(rng, face, n):
    return np.clip(face.astype(float) + rng.normal(0, 20, size=(n, *face.shape)), 0, 255).astype(np.uint8)


def _write(folder, images, labels):
    prov = [Provenance(identity=int(x), attributes={"gender": "female"}) for x in labels]
    return Path(write_faceset(FaceSet(images, np.asarray(labels, np.int64), prov), folder).path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    base = tmp_path_factory.mktemp("audit")
    make_tiny_face_pack(base / "insightface", "tiny_pack")
    models = load_face_pack([base / "insightface"], "tiny_pack")
    rng = np.random.default_rng(5)
    src, images, labels = synthetic_identity_faces(N_ID, PER, noise=20, seed=3)
    images = images.copy()
    # identity 8 repeats identity 2, identity 9 repeats identity 5 (new noise, same person)
    for dup, orig in ((8, 2), (9, 5)):
        images[labels == dup] = _noisy(rng, src[orig], PER)
    ds = _write(base / "ds", images, labels)
    # real set 0: embeddings (.npy) holding identity 4 among strangers; real set 1: a data set holding 7
    strangers, _, _ = synthetic_identity_faces(4, 1, seed=11)
    e4 = models.embed(_noisy(rng, src[4], 2)).mean(0)
    npy = base / "real.npy"
    np.save(npy, np.concatenate([models.embed(strangers[:3]), e4[None]]))
    real_imgs = np.concatenate([_noisy(rng, strangers[3], 2), _noisy(rng, src[7], 2)])
    real_ds = _write(base / "real", real_imgs, [0, 0, 1, 1])
    return base, models, ds, npy, real_ds


def _centres(models, folder_images, labels):
    e = models.embed(folder_images)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    out = []
    for c in sorted(set(labels.tolist())):
        m = e[labels == c].mean(0)
        out.append(m / np.linalg.norm(m))
    return np.stack(out)


def _run(capsys, *argv):
    rc = main(list(argv))
    return rc, capsys.readouterr()


def test_audit_finds_exactly_the_planted_identities(planted, capsys, tmp_path):
    base, models, ds, npy, real_ds = planted
    pack = ["--pack", "tiny_pack", "--insightface-dir", str(base / "insightface")]
    rc, out = _run(capsys, "audit", str(ds), "--real", str(npy), "--real", str(real_ds), *pack, "--json")
    assert rc == 1, out.err
    res = json.loads(out.out)
    assert res["identities"] == N_ID and res["threshold"] == THR
    assert [p[:2] for p in res["duplicate_pairs"]] == [[2, 8], [5, 9]]
    assert [m[:3] for m in res["real_matches"]] == [[4, 0, 3], [7, 1, 1]]
    assert res["flagged"] == [4, 7, 8, 9]
    # independent: the same embeddings through numpy, every pair
    import cv2

    from fdta_core.recordio import RecordReader, read_layout

    with RecordReader(ds / "train.rec") as r:
        lay = read_layout(r, scan_labels=True)
        imgs = np.stack(
            [
                cv2.imdecode(np.frombuffer(r.read_unpacked(k)[1], np.uint8), 1)[..., ::-1]
                for k in lay.image_keys
            ]
        )
    cen = _centres(models, imgs, np.asarray(lay.labels))
    sims = cen @ cen.T
    ref = [[i, j] for i in range(N_ID) for j in range(i + 1, N_ID) if sims[i, j] >= THR]
    assert ref == [[2, 8], [5, 9]]
    for (i, j), p in zip(ref, res["duplicate_pairs"], strict=True):
        assert p[2] == pytest.approx(sims[i, j], abs=1e-4)
    real0 = np.load(npy)
    real0 = real0 / np.linalg.norm(real0, axis=1, keepdims=True)
    assert [[i, int(j)] for i in range(N_ID) for j in np.nonzero(cen[i] @ real0.T >= THR)[0]] == [[4, 3]]

    # --write-filtered: renumbered, manifest kept; passes rec info and a second audit
    out_dir = tmp_path / "clean"
    rc, out = _run(
        capsys,
        "audit",
        str(ds),
        "--real",
        str(npy),
        "--real",
        str(real_ds),
        *pack,
        "--write-filtered",
        str(out_dir),
    )
    assert rc == 1 and "flagged: 4 identities" in out.out
    rc, out = _run(capsys, "rec", "info", str(out_dir), "--json")
    info = json.loads(out.out)
    assert rc == 0 and info["ok"] and info["classes"] == N_ID - 4 and info["images"] == (N_ID - 4) * PER
    con = sqlite3.connect(out_dir / "manifest.sqlite")
    rows = con.execute("SELECT DISTINCT label, identity FROM images ORDER BY label").fetchall()
    con.close()
    assert rows == [(i, orig) for i, orig in enumerate([0, 1, 2, 3, 5, 6])]
    rc, out = _run(capsys, "audit", str(out_dir), "--real", str(npy), "--real", str(real_ds), *pack, "--json")
    res2 = json.loads(out.out)
    assert rc == 0 and res2["flagged"] == [] and res2["duplicate_pairs"] == [] and res2["identities"] == 6


def test_audit_bad_input_exits_2(planted, capsys, tmp_path):
    base, _models, ds, _npy, _ = planted
    pack = ["--pack", "tiny_pack", "--insightface-dir", str(base / "insightface")]
    rc, out = _run(capsys, "audit", str(tmp_path / "nothing"), "--pack", "nope")
    assert rc == 2 and "DATASET" in out.err and "does not exist" in out.err  # before the models load
    rc, out = _run(capsys, "audit", str(ds), "--real", str(tmp_path / "no_real"), *pack)
    assert rc == 2 and "--real" in out.err and "no_real" in out.err
    (tmp_path / "empty").mkdir()
    rc, out = _run(capsys, "audit", str(tmp_path / "empty"), *pack)
    assert rc == 2 and "train.rec" in out.err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3,)))
    rc, out = _run(capsys, "audit", str(ds), "--real", str(bad), *pack)
    assert rc == 2 and "--real" in out.err
    rc, out = _run(capsys, "audit", str(ds), "--threshold", "2", *pack)
    assert rc == 2 and "cosine" in out.err
    rc, out = _run(capsys, "audit", str(ds), "--pack", "nope", "--insightface-dir", str(base / "insightface"))
    assert rc == 2 and "nope" in out.err


def test_merge_audits_across_chunks(planted, capsys, tmp_path):
    """Identity 4 of the second chunk repeats identity 1 of the first: each chunk alone is unique, the
    merge finds the pair on the way (exit 1) and names the later identity."""
    base, _models, _ds, _npy, _ = planted
    rng = np.random.default_rng(9)
    src, images, labels = synthetic_identity_faces(6, PER, noise=20, seed=4)
    images = images.copy()
    images[labels == 4] = _noisy(rng, src[1], PER)
    ds = tmp_path / "two"
    for lo, hi in ((0, 3), (3, 6)):
        sel = (labels >= lo) & (labels < hi)
        prov = [Provenance(identity=int(x)) for x in labels[sel]]
        write_faceset(FaceSet(images[sel], labels[sel], prov), ds, start=lo, count=hi - lo)
    pack = ["--pack", "tiny_pack", "--insightface-dir", str(base / "insightface")]
    rc, out = _run(capsys, "rec", "merge", str(tmp_path / "m"), str(ds), "--audit", *pack, "--json")
    summary = json.loads(out.out)
    assert rc == 1 and [p[:2] for p in summary["audit"]["duplicate_pairs"]] == [[1, 4]]
    assert summary["audit"]["flagged"] == [4] and summary["classes"] == 6
    rc, out = _run(capsys, "rec", "merge", str(tmp_path / "m2"), str(ds), "--audit")
    assert rc == 2 and "--pack" in out.err


def _save_png(path, img):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def test_a_photo_folder_is_a_real_set_with_cached_embeddings(planted, capsys, tmp_path):
    """--real FOLDER: one subfolder per person (or one photo per person); faces aligned and embedded with
    the pack, each person's embedding cached outside the folder; identity 7 is found in it."""
    from fdta_core.faces.audit import real_identities
    from fdta_core.faces.realset import folder_identities, list_people

    base, models, ds, _npy, _real_ds = planted
    rng = np.random.default_rng(9)
    src, _, _ = synthetic_identity_faces(N_ID, PER, noise=20, seed=3)
    strangers, _, _ = synthetic_identity_faces(3, 1, seed=21)
    photos = tmp_path / "photos"
    for k, img in enumerate(_noisy(rng, src[7], 2)):
        _save_png(photos / "seven" / "sub" / f"{k}.png", img)
    _save_png(photos / "stranger.png", strangers[0])
    _save_png(photos / "other" / "a.png", strangers[1])
    (photos / "empty").mkdir()
    (photos / "notes.txt").write_text("not an image")
    people = list_people(photos)
    assert people.names == ["other", "seven", "stranger"]
    assert people.files[1] == ["seven/sub/0.png", "seven/sub/1.png"]

    cache = tmp_path / "cache"
    pack = ["--pack", "tiny_pack", "--insightface-dir", str(base / "insightface")]
    rc, out = _run(
        capsys, "audit", str(ds), "--real", str(photos), "--cache-dir", str(cache), *pack, "--json"
    )
    assert rc == 1, out.err
    res = json.loads(out.out)
    assert [m[:3] for m in res["real_matches"]] == [[7, 0, 1]]  # person 1 = 'seven'
    assert sorted(p.name for p in photos.rglob("*") if p.suffix == ".npz") == []  # nothing in the folder
    (cached,) = cache.glob("real-*.npz")
    rc, out = _run(capsys, "audit", str(ds), "--real", str(photos), "--cache-dir", str(cache), *pack)
    assert rc == 1 and "matches" in out.out and "'seven'" in out.out

    class Counting:
        """The pack, counting how many faces it embeds (the cache must spare them)."""

        calls = 0

        def describe(self):
            return models.describe()

        def align_batch(self, *a, **kw):
            return models.align_batch(*a, **kw)

        def embed(self, x, batch_size=32):
            Counting.calls += len(x)
            return models.embed(x, batch_size=batch_size)

    got = real_identities(photos, Counting(), cache_dir=cache)
    assert Counting.calls == 0 and got.names == ["other", "seven", "stranger"]
    _save_png(photos / "seven" / "2.png", _noisy(rng, src[7], 1)[0])  # the folder changed: embedded again
    names, centers = folder_identities(photos, Counting(), cache_dir=cache)
    assert Counting.calls == 5 and centers.shape == (3, models.embedding_dim)
    assert len(list(cache.glob("real-*.npz"))) == 2 and cached.is_file()
    with pytest.raises(InputError, match="lies inside the real set"):
        folder_identities(photos, Counting(), cache_dir=photos / ".cache")


def test_photo_folder_errors_name_the_folder(tmp_path, capsys):
    from fdta_core.faces.pack import AlignResult, DroppedImage
    from fdta_core.faces.realset import folder_identities

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"no images .* in {empty}"):
        folder_identities(empty, None)
    photos = tmp_path / "p"
    _save_png(photos / "a" / "x.png", np.zeros((64, 80, 3), np.uint8))
    _save_png(photos / "b.png", np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(InputError, match="needs a face pack"):
        folder_identities(photos, None)

    class NoFaces:
        def describe(self):
            return "none"

        def align_batch(self, images, **kw):
            return AlignResult(
                np.zeros((0, 112, 112, 3), np.uint8),
                np.zeros((0,), np.int64),
                [],
                [DroppedImage(i, "no face found (80x64 image)") for i in range(len(images))],
                len(images),
            )

    with pytest.raises(InputError, match=f"no faces found in {photos} \\(2 image\\(s\\) of 2 people\\)"):
        folder_identities(photos, NoFaces(), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    rc = main(["audit", str(tmp_path / "nothing"), "--pack", "x", "--insightface-dir", str(tmp_path)])
    assert rc == 2
    capsys.readouterr()


def test_the_acg_keeps_a_photo_folder_of_real_people_out(planted, tmp_path):
    """The ACG's real_sets take a photo folder too: its people join the real-person index (embedded once,
    cached in the given output folder)."""
    from fdta_core.acg.faces_adapter import as_analyzer
    from fdta_core.acg.generate import real_person_bank

    _base, models, _ds, _npy, _real_ds = planted
    src, _, _ = synthetic_identity_faces(3, 1, seed=31)
    photos = tmp_path / "people"
    for k, face in enumerate(src):
        _save_png(photos / f"person{k}" / "a.png", face)
    cache = tmp_path / "output" / "fdta" / "real_set_cache"
    real = real_person_bank(
        as_analyzer(models), real_sets=[str(photos)], face_models=models, real_cache=cache
    )
    assert len(real) == 3 and len(list(cache.glob("real-*.npz"))) == 1
    e = models.embed(src[1:2])[0]
    cos, label = real.most_similar(e)
    assert cos > 0.99 and label == f"person 1 of {photos}"


def test_clustered_search_above_the_exact_limit_finds_close_pairs_and_reports_true_cosines(monkeypatch):
    """Above EXACT_LIMIT the duplicate search is clustered (approximate): it must still find pairs that
    are clearly the same person, report only pairs truly at or above the threshold with their exact
    cosine, and say which search ran."""
    import fdta_core.faces.identity as ident

    rng = np.random.default_rng(3)
    n, dim = 6000, 128
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    planted = set()
    for a, b in zip(
        rng.choice(n // 2, 12, replace=False), n // 2 + rng.choice(n // 2, 12, replace=False), strict=True
    ):
        c = rng.uniform(0.7, 0.95)
        r = rng.normal(size=dim)
        r -= (r @ x[a]) * x[a]
        x[b] = c * x[a] + np.sqrt(1 - c * c) * r / np.linalg.norm(r)
        planted.add((int(a), int(b)))
    monkeypatch.setattr(ident, "EXACT_LIMIT", 1000)
    monkeypatch.setattr(ident, "CELL_SIZE", 250)
    monkeypatch.setattr(ident, "PROBES", 8)  # 8 of 24 cells: a real approximation
    a, b, c, info = ident.range_pairs(x, None, 0.5)
    assert info.method == "clustered" and (info.nlist, info.nprobe) == (24, 8)
    found = {(int(i), int(j)) for i, j in zip(a, b, strict=True)}
    assert planted <= found
    assert all(i < j for i, j in found)
    true = np.einsum("ij,ij->i", x[a], x[b])
    np.testing.assert_allclose(c, true, atol=1e-5)
    assert (true >= 0.5 - 1e-6).all()
    ea, eb, _, einfo = ident.range_pairs(x, None, 0.5, exact=True)
    assert einfo.method == "exact" and found <= {(int(i), int(j)) for i, j in zip(ea, eb, strict=True)}
