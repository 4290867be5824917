"""``fdta report``: metrics and HTML/JSON of a tiny dataset written in the insightface RecordIO layout."""

from __future__ import annotations

import json
import sqlite3

import cv2
import numpy as np
import pytest

from fdta_core.cli import main
from fdta_core.faces import load_face_pack
from fdta_core.faces.metrics import compute_metrics, intra_class_consistency, uniqueness
from fdta_core.faces.report import ReportData, load_dataset, write_report
from fdta_core.recordio import IRHeader, RecordWriter, pack, write_property
from fdta_core.testing.faces import make_tiny_face_pack, synthetic_identity_faces

N_ID, PER = 4, 3


def _write_dataset(folder, images, labels, genders, with_manifest=True):
    folder.mkdir(parents=True, exist_ok=True)
    n, ids = len(images), sorted(set(labels.tolist()))
    with RecordWriter(folder / "train.rec", folder / "train.idx") as w:
        w.write(0, pack(IRHeader(2, (n + 1.0, n + len(ids) + 1.0)), b""))
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            ok, jpg = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            w.write(i + 1, pack(IRHeader(0, float(lab)), jpg.tobytes()))
        for c in ids:
            keys = np.nonzero(labels == c)[0] + 1
            w.write(n + 1 + c, pack(IRHeader(2, (float(keys[0]), float(keys[-1] + 1))), b""))
    write_property(folder, len(ids))
    if with_manifest:
        con = sqlite3.connect(folder / "manifest.sqlite")
        con.execute(
            "CREATE TABLE images (key INTEGER PRIMARY KEY, label INTEGER, identity INTEGER, attributes TEXT, csim REAL, age_target REAL)"
        )
        for i, lab in enumerate(labels.tolist()):
            attrs = json.dumps({"gender": genders[lab], "age": str(25 + 10 * lab)})
            con.execute(
                "INSERT INTO images VALUES (?,?,?,?,?,?)",
                (i + 1, lab, 100 + lab, attrs, 0.4 + 0.01 * i, None),
            )
        con.commit()
        con.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    make_tiny_face_pack(base / "insightface", "tiny_pack")
    _, images, labels = synthetic_identity_faces(N_ID, PER, noise=30, seed=2)
    _write_dataset(base / "ds", images, labels, ["male", "female", "female", "male"])
    return base


def test_report_cli_matches_independent_metrics(setup, capsys):
    ds = setup / "ds"
    rc = main(
        ["report", str(ds), "--pack", "tiny_pack", "--insightface-dir", str(setup / "insightface"), "--json"]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == N_ID * PER and summary["identities"] == N_ID
    # independent: decode the JPEGs ourselves and embed with the same pack
    models = load_face_pack([setup / "insightface"], "tiny_pack")
    from fdta_core.recordio import RecordReader

    r = RecordReader(ds / "train.rec")
    imgs = [
        cv2.imdecode(np.frombuffer(r.read_unpacked(k)[1], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        for k in range(1, 13)
    ]
    emb = models.embed(np.stack(imgs))
    labels = np.repeat(np.arange(N_ID), PER)
    assert summary["uniqueness"] == pytest.approx(uniqueness(emb, labels))
    assert summary["intra_class_consistency"] == pytest.approx(intra_class_consistency(emb, labels)[0])
    assert summary["csim"]["mean"] == pytest.approx(np.mean(0.4 + 0.01 * np.arange(12)))
    bal = {row["attribute"]: row for row in summary["attribute_balance"]}
    assert bal["gender"]["requested"] == {"female": 0.5, "male": 0.5}
    assert sum(bal["gender"]["achieved"].values()) == pytest.approx(1.0)
    assert bal["age"]["requested"] == {"20-29": 0.25, "30-39": 0.25, "40-49": 0.25, "50-59": 0.25}
    html = (ds / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "uniqueness" in html
    assert json.loads((ds / "report" / "report.json").read_text())["identities"] == N_ID


def test_report_without_models_or_manifest(setup, tmp_path, capsys):
    _, images, labels = synthetic_identity_faces(3, 2, seed=3)
    _write_dataset(tmp_path / "bare", images, labels, [], with_manifest=False)
    rc = main(["report", str(tmp_path / "bare"), "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "6 images, 3 identities" in out and "no manifest" in out and "no face models" in out
    assert (tmp_path / "out" / "report.html").is_file()


def test_report_max_images_keeps_whole_identities(setup):
    data = load_dataset(setup / "ds", None, max_images=5)
    assert len(data.labels) == 6 and set(data.labels.tolist()) == {0, 1}
    assert "limited" in data.notes[0]


def test_missing_dataset_is_clear(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no train.rec" in capsys.readouterr().err


def test_in_memory_report(tmp_path, rng):
    emb = rng.normal(size=(20, 16))
    labels = np.repeat(np.arange(5), 4)
    data = ReportData(
        "mem",
        labels,
        emb,
        csim=rng.uniform(0, 1, 20),
        requested={"gender": ["m", "f", "m", "f", "m"]},
        achieved={"gender": ["m"] * 5},
    )
    html_path, json_path, summary = write_report(data, tmp_path)
    ref = compute_metrics(
        labels, emb, csim=data.csim, requested=data.requested, achieved=data.achieved
    ).to_dict()
    assert (
        summary["uniqueness"] == ref["uniqueness"]
        and summary["attribute_balance"] == ref["attribute_balance"]
    )
    assert html_path.read_text().startswith("<!doctype html>")


def test_records_that_are_not_images_are_a_dataset_error(tmp_path, capsys):
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, pack(IRHeader(0, 0.0), b"not a jpeg"))
        w.write(1, pack(IRHeader(0, 1.0), b""))
    assert main(["report", str(tmp_path)]) == 2
    assert "does not hold a decodable image" in capsys.readouterr().err


def test_report_on_mxnet_written_golden_set(shared_testdata, setup, tmp_path):
    """The golden insightface-layout set written by the real mxnet: counts come from its expected.json."""
    folder = shared_testdata / "recordio" / "insightface_layout"
    expected = json.loads((folder / "expected.json").read_text())
    models = load_face_pack([setup / "insightface"], "tiny_pack")
    data = load_dataset(folder, models)
    _, _, summary = write_report(data, tmp_path)
    assert summary["images"] == expected["N"] and summary["identities"] == expected["C"]
    counts = sorted(np.unique(data.labels, return_counts=True)[1].tolist())
    assert counts == sorted(expected["images_per_identity"])
    assert data.embeddings.shape == (expected["N"], 512) and 0 < summary["uniqueness"] <= 1


def test_report_without_pack_makes_up_no_attribute_balance(setup, tmp_path, capsys):
    """Issue 12: without a gender/age model nothing achieved was measured, so no variation is printed."""
    rc = main(["report", str(setup / "ds"), "--out", str(tmp_path / "out"), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    rows = summary["attribute_balance"]
    assert rows and all(r["total_variation"] is None and r["achieved"] == {} for r in rows)
    assert main(["report", str(setup / "ds"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "total variation" not in out and "achieved proportions not measured" in out
    assert "total variation 0.500" not in (tmp_path / "out" / "report.html").read_text()


def test_report_shows_identity_diversity_and_vendi(setup, tmp_path, capsys):
    """Pairwise identity cosines (p99) and the Vendi score of the identity centres, and of the source
    faces when the run's identity index is given; checked against a direct computation."""
    from fdta_core.faces.identity import IdentityIndex, RunIndex, identity_centers

    ds = setup / "ds"
    models = load_face_pack([setup / "insightface"], "tiny_pack")
    rng = np.random.default_rng(5)
    sources = rng.normal(size=(6, 512))
    idx = IdentityIndex()
    idx.extend([f"identity {i}" for i in range(6)], sources, list(range(6)))
    RunIndex(tmp_path / "index").save_chunk(0, 6, idx)
    rc = main(
        ["report", str(ds), "--pack", "tiny_pack", "--insightface-dir", str(setup / "insightface"),
         "--identity-index", str(tmp_path / "index"), "--out", str(tmp_path / "rep"), "--json"]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    data = load_dataset(ds, models)
    _, centers = identity_centers(data.embeddings, data.labels)
    for key, x in (("identity_diversity", centers), ("source_face_diversity", sources)):
        d = summary[key]
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        k = u @ u.T
        pairs = k[np.triu_indices(len(u), 1)]
        assert d["pairs"] == len(pairs)
        assert d["p99"] == pytest.approx(np.quantile(pairs, 0.99), abs=1e-5)
        lam = np.clip(np.linalg.eigvalsh(k / len(u)), 0, None)
        lam = lam[lam > 1e-12]
        assert d["vendi_score"] == pytest.approx(np.exp(-np.sum(lam * np.log(lam))), rel=1e-4)
    assert "Pairwise identity cosine" in (tmp_path / "rep" / "report.html").read_text()
    rc = main(["report", str(ds), "--pack", "tiny_pack", "--insightface-dir", str(setup / "insightface"),
               "--out", str(tmp_path / "rep2")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "identity diversity: pairwise cosine median" in out and "Vendi score" in out
