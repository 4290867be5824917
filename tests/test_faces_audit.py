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
    rc, out = _run(capsys, "audit", str(tmp_path / "nothing"), *pack)
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
